/**
 * Who a process is, in a form another process can check: pid, the
 * process's start time (so a reused pid is not mistaken for it), the boot
 * it runs in (so a pid from before a reboot is not either) and the host.
 * A holder is dead only when that is provable on this host (Python
 * filelock's rule): a foreign host, or a process whose start time cannot be
 * read, counts as alive, and its lock goes only when its lease runs out.
 *
 * The pid space: two containers may share a host name, a boot and a lock
 * directory, yet each see its own pids (PID namespaces). An owner's id ends
 * in a tag of its host, boot and PID namespace; a holder whose tag is not
 * ours lives where our pids mean nothing, and counts as alive too.
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { createHash } from 'node:crypto';

export interface Owner {
  /** Unique across processes and hosts: the holder's id in every backend. */
  readonly id: string;
  readonly pid: number;
  /** Start time in clock ticks since boot (/proc/<pid>/stat field 22), '' where unknown. */
  readonly start: string;
  /** /proc/sys/kernel/random/boot_id, '' where unknown. */
  readonly boot: string;
  readonly host: string;
}

/**
 * Start time of `pid` as /proc shows it, or '' (no such process, or no
 * /proc); 'dead' for a process that has exited and not been reaped yet (a
 * zombie keeps its pid and start time, but holds nothing any more).
 */
export function startOf(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Field 2 (comm) is in parentheses and may hold spaces or ')': count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X') return 'dead';
    return fields[19] ?? '';
  } catch {
    return '';
  }
}

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim();
  } catch {
    return '';
  }
}

/** This process's PID namespace ('pid:[4026531836]'), or '' where /proc cannot tell. */
function pidNamespace(): string {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return '';
  }
}

let self: Owner | undefined;

/** This process, as every thread of it sees it (the same id in each): `<pid>-<start>-<pid space tag>`. */
export function me(): Owner {
  if (self !== undefined) return self;
  const host = hostname(), start = startOf(process.pid), boot = bootId();
  const tag = createHash('sha256').update(`${host}\0${boot}\0${pidNamespace()}`).digest('hex').slice(0, 8);
  return (self = { id: `${process.pid}-${start || Date.now()}-${tag}`, pid: process.pid, start, boot, host });
}

/** The pid space tag of an owner id (its third field; ids of one process's clients may add more). */
const spaceOf = (id: string) => id.split('-')[2];

/**
 * Whether `owner` is provably dead: on this host and boot, in our pid space,
 * and its pid is gone or now belongs to a process that started at another
 * time. A different boot id on this host proves it too (the machine
 * restarted).
 */
export function provablyDead(owner: Pick<Owner, 'id' | 'pid' | 'start' | 'boot' | 'host'>): boolean {
  const mine = me();
  if (owner.host !== mine.host) return false;
  if (owner.boot !== '' && mine.boot !== '' && owner.boot !== mine.boot) return true;
  if (spaceOf(owner.id) !== spaceOf(mine.id)) return false; // another PID namespace: its pids are not ours to check
  if (!Number.isInteger(owner.pid) || owner.pid <= 0) return false;
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    // ESRCH: no such process. EPERM: alive, another user's.
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
  const now = startOf(owner.pid);
  if (now === 'dead') return true;
  return owner.start !== '' && now !== '' && now !== owner.start;
}

/** Epoch ms: the clock every process of a host shares, for lease expiry (a clock step moves every lease with it). */
export const wallClock = (): number => Date.now();

/** CLOCK_MONOTONIC in ms: comparable between processes of one Linux host, for arrival order. */
export const monotonicMs = (): number => Number(process.hrtime.bigint()) / 1e6;
