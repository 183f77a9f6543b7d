/**
 * The two kinds of file of the file backend whose contents matter, in
 * binary with a checksum, so that a torn, truncated or corrupt read is seen
 * and never trusted (issue 17 item 5):
 *
 * - a process's record of a name, `o-<owner>` (RECORD_BYTES): who it is
 *   (id, pid, hashes of its host and boot: identity.ts), what it asks for
 *   (mode, state, ttl, its place in line, the FIFO that wakes it). Its lease
 *   is the inode's mtime + ttl: every write renews it, and the lease keeper
 *   renews it with futimes(2) without touching the contents. Every marker of
 *   the name (the gate, the latch, a queue entry, a shared holder's marker)
 *   is a hard link to it, so reading a marker reads its owner whole.
 * - the name's token store, `seq` (SEQ_BYTES).
 *
 * Record (little-endian):
 *   0 u32 magic 'LKR2' | 4 u8 version | 5 u8 state | 6 u8 mode | 7 u8 id length
 *   8 u32 pid | 12 u8 host name length | 13 u8 FIFO length | 14 u8 start length
 *   16 u32×2 host hash | 24 u32×2 boot hash | 32 f64 ttl | 40 f64 since
 *   (CLOCK_MONOTONIC µs: its place in line) | 48 f64 at (epoch ms of the write)
 *   64..127 id | 128..191 host name (for `latchkey status`) | 192..223 FIFO
 *   (the index of the FIFO that wakes it: fifo.ts) | 224..247 start (its start time in
 *   clock ticks, identity.ts; '' where unknown) | 252 u32 checksum (FNV-1a of 0..251)
 *
 * seq:
 *   0 f64 grants: host grants of the name in this store (what `latchkey
 *     status` shows as hot, cli/hot.ts: it reads these 8 bytes)
 *   8 u32 magic 'LKS2' | 12 u32 flags (ABANDONED)
 *   16 f64 token: the last token issued
 *   24 f64 readers: shared grants since the last exclusive one (a hint: a
 *     writer counts s/ markers only when it is not 0)
 *   32 f64 holder: ownerHash() of the process the token was issued to
 *   60 u32 checksum (FNV-1a of 0..59)
 * Written only by the gate's holder or the holder of the latch `b`, one
 * pwrite(2) of the whole block (a reader sees the old block or the new one).
 *
 * Tokens are safe integers from 0 to MAX_TOKEN, strictly increasing per
 * name. MAX_TOKEN keeps every token the front door shows (host token ×
 * TOKEN_SPAN + pass, atomics/queue/word.ts) a safe integer; reaching it is
 * ERR_LOCK_BACKEND, never a wrap. A store holding anything else (NaN,
 * 1e60, a fraction, a negative number, a bad checksum) is refused with
 * ERR_LOCK_BACKEND, never reset.
 */
import { readSync, writeSync } from 'node:fs';
import { TOKEN_SPAN } from '../../atomics/queue/word.js';
import type { Hash64 } from '../identity.js';

export const RECORD_BYTES = 256;
export const SEQ_BYTES = 64;
const REC_MAGIC = 0x32524b4c; // 'LKR2' little-endian
const SEQ_MAGIC = 0x32534b4c; // 'LKS2'

/** Record states. */
export const IDLE = 0;
/** Queued (q/ holds a link to it), handed the gate and not yet in, or holding: its section may be running. */
export const HELD = 2;
/** A writer that holds the gate and waits for the readers in to leave. */
export const ENTERING = 3;

export const EXCLUSIVE = 1;
export const SHARED = 2;

/** seq flags: the grant of `token` (or, while nobody holds, the next grant) is told its predecessor died. */
export const ABANDONED = 1;

/** The largest host token: host token × TOKEN_SPAN + pass stays a safe integer. */
export const MAX_TOKEN = Math.floor(Number.MAX_SAFE_INTEGER / TOKEN_SPAN) - 1;

export interface Rec {
  readonly state: number;
  readonly mode: number;
  readonly id: string;
  readonly pid: number;
  /** Its start time (identity.ts Owner.start), '' where unknown. */
  readonly start: string;
  readonly host: string;
  readonly hostHash: Hash64;
  readonly bootHash: Hash64;
  readonly ttl: number;
  /** CLOCK_MONOTONIC µs: the request's place in line. */
  readonly since: number;
  /** Epoch ms the record was written. */
  readonly at: number;
  /** The FIFO that wakes its waiter ('' when none). */
  readonly fifo: string;
}

export interface Seq {
  readonly grants: number;
  readonly flags: number;
  readonly token: number;
  readonly readers: number;
  readonly holder: number;
}

function fnv(buf: Buffer, end: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < end; i++) {
    h ^= buf[i]!;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** `s` as at most `max` bytes of UTF-8, cut at a character boundary. */
function writeCut(buf: Buffer, s: string, at: number, max: number): number {
  let n = buf.write(s, at, max, 'utf8');
  // Buffer.write never writes half a character: n is already at a boundary.
  if (n > max) n = max;
  return n;
}

export function encodeRecord(buf: Buffer, r: Rec): void {
  buf.fill(0, 0, RECORD_BYTES);
  buf.writeUInt32LE(REC_MAGIC, 0);
  buf[4] = 1;
  buf[5] = r.state;
  buf[6] = r.mode;
  buf[7] = buf.write(r.id, 64, 64, 'latin1');
  buf.writeUInt32LE(r.pid, 8);
  buf[12] = writeCut(buf, r.host, 128, 64);
  buf[13] = buf.write(r.fifo, 192, 32, 'latin1');
  buf[14] = buf.write(r.start, 224, 24, 'latin1');
  buf.writeUInt32LE(r.hostHash[0], 16);
  buf.writeUInt32LE(r.hostHash[1], 20);
  buf.writeUInt32LE(r.bootHash[0], 24);
  buf.writeUInt32LE(r.bootHash[1], 28);
  buf.writeDoubleLE(r.ttl, 32);
  buf.writeDoubleLE(r.since, 40);
  buf.writeDoubleLE(r.at, 48);
  buf.writeUInt32LE(fnv(buf, 252), 252);
}

/** A record read whole (`n` bytes), or null when it is not one (torn, corrupt, another format). */
export function decodeRecord(buf: Buffer, n: number): Rec | null {
  if (n !== RECORD_BYTES || buf.readUInt32LE(0) !== REC_MAGIC || buf[4] !== 1 || buf.readUInt32LE(252) !== fnv(buf, 252)) return null;
  const state = buf[5]!, mode = buf[6]!;
  if ((state !== IDLE && state !== HELD && state !== ENTERING) || (mode !== EXCLUSIVE && mode !== SHARED)) return null;
  if (buf[7]! > 64 || buf[12]! > 64 || buf[13]! > 32 || buf[14]! > 24) return null;
  const ttl = buf.readDoubleLE(32);
  if (!Number.isFinite(ttl) || ttl <= 0) return null;
  return {
    state, mode, id: buf.toString('latin1', 64, 64 + buf[7]!), pid: buf.readUInt32LE(8), start: buf.toString('latin1', 224, 224 + buf[14]!),
    host: buf.toString('utf8', 128, 128 + buf[12]!),
    hostHash: [buf.readUInt32LE(16), buf.readUInt32LE(20)], bootHash: [buf.readUInt32LE(24), buf.readUInt32LE(28)],
    ttl, since: buf.readDoubleLE(40), at: buf.readDoubleLE(48), fifo: buf.toString('latin1', 192, 192 + buf[13]!),
  };
}

const validCount = (x: number) => Number.isSafeInteger(x) && x >= 0;

/** seq as read from `fd`, or 'corrupt' (an empty or truncated file too: a store is written whole before anyone sees it). */
export function readSeq(fd: number, buf: Buffer): Seq | 'corrupt' {
  const n = readSync(fd, buf, 0, SEQ_BYTES, 0);
  if (n !== SEQ_BYTES || buf.readUInt32LE(8) !== SEQ_MAGIC || buf.readUInt32LE(60) !== fnv(buf, 60)) return 'corrupt';
  const grants = buf.readDoubleLE(0), token = buf.readDoubleLE(16), readers = buf.readDoubleLE(24), holder = buf.readDoubleLE(32);
  if (!validCount(grants) || !validCount(token) || token > MAX_TOKEN || !validCount(readers) || !Number.isFinite(holder)) return 'corrupt';
  return { grants, flags: buf.readUInt32LE(12), token, readers, holder };
}

export function encodeSeq(buf: Buffer, s: Seq): void {
  buf.fill(0, 0, SEQ_BYTES);
  buf.writeDoubleLE(s.grants, 0);
  buf.writeUInt32LE(SEQ_MAGIC, 8);
  buf.writeUInt32LE(s.flags, 12);
  buf.writeDoubleLE(s.token, 16);
  buf.writeDoubleLE(s.readers, 24);
  buf.writeDoubleLE(s.holder, 32);
  buf.writeUInt32LE(fnv(buf, 60), 60);
}

export function writeSeq(fd: number, buf: Buffer, s: Seq): void {
  encodeSeq(buf, s);
  writeSync(fd, buf, 0, SEQ_BYTES, 0);
}

/** 52 bits of FNV-1a of an owner id (seq's holder: whom its token was issued to). Exact in a float64. */
export function ownerHash(id: string): number {
  let a = 0x811c9dc5, b = 0x01000193 ^ 0x5bd1e995;
  for (let i = 0; i < id.length; i++) {
    const c = id.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193) >>> 0;
    b = Math.imul(b ^ c, 0x01000193) >>> 0;
  }
  return (b & 0xfffff) * 0x1_0000_0000 + a;
}
