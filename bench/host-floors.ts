/**
 * The host tier's floors (issue 13), measured in the same run as latchkey's
 * figures (bench/host.ts). Each function returns plain numbers.
 *
 * - flock(2), in C (bench/floors/flock-floor.c): compiled here with `cc -O2`
 *   into a temporary directory when a C compiler exists; without one, these
 *   floors are skipped with a message (no binary is committed).
 *   flockContend: N processes × sequential flock → pread/+1/pwrite of a
 *   counter → unlock, as latchkey's contended run does; flockHandoverUs: the
 *   hand-over to a waiter parked in flock(2).
 * - fifoWakeUs: one byte written to a FIFO → the read callback in another
 *   Node process whose event loop is asleep (libuv), and → a blocking
 *   readSync returning (workers/host-fifo-wake.ts). This is how latchkey
 *   wakes a waiting process: nothing between two processes of Node wakes one
 *   faster here, so it is the floor the hand-over is held to.
 * - nodeStartMs: wall time of `node -e 0` (what `latchkey run NAME -- true`
 *   is held to).
 */
import { execFileSync, fork, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.round(p * (sorted.length - 1)))]!;

let flockBin: string | null | undefined;

/** The flock(2) helper, compiled once per run; null (and a message on stderr) without a working C compiler. */
export function flockFloor(): string | null {
  if (flockBin !== undefined) return flockBin;
  // dist/bench/host-floors.js → the source tree's bench/floors/flock-floor.c
  const source = here('../../bench/floors/flock-floor.c');
  const out = join(fs.mkdtempSync(join(tmpdir(), 'latchkey-flock-')), 'flock-floor');
  try {
    execFileSync('cc', ['-O2', '-Wall', '-o', out, source], { stdio: 'pipe' });
    flockBin = out;
  } catch (err) {
    process.stderr.write(`flock(2) floor skipped: no working C compiler (cc: ${(err as { code?: string }).code ?? (err as Error).message.split('\n')[0]})\n`);
    flockBin = null;
  }
  return flockBin;
}

function flock(mode: string, dir: string, ...args: Array<string | number>): Record<string, number | boolean> {
  const bin = flockFloor();
  if (bin === null) throw new Error('no flock floor');
  const d = fs.mkdtempSync(join(dir, 'flock-'));
  try {
    return JSON.parse(execFileSync(bin, [mode, d, ...args.map(String)], { encoding: 'utf8' })) as Record<string, number | boolean>;
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
}

export interface FlockContend { opsPerSec: number; changes: number; handoverP50Us: number }

/** `procs` × `iters` under flock(2): exact, or it throws. */
export function flockContend(dir: string, procs: number, iters: number): FlockContend | null {
  if (flockFloor() === null) return null;
  const r = flock('contend', dir, procs, iters);
  if (r.exact !== true || r.overlap === true) throw new Error(`the flock floor was not exact: ${JSON.stringify(r)}`);
  return { opsPerSec: r.opsPerSec as number, changes: r.changes as number, handoverP50Us: r.handoverP50Us as number };
}

/** Hand-over to a waiter parked in flock(2), p50 µs. */
export function flockHandoverUs(dir: string, rounds: number): number | null {
  if (flockFloor() === null) return null;
  return flock('handover', dir, rounds).p50Us as number;
}

/** A byte on a FIFO → the other process's libuv read callback, and → its blocking readSync: p50 µs of each. */
export async function fifoWakeUs(dir: string, rounds: number): Promise<{ libuv: number; sync: number }> {
  const out = { libuv: NaN, sync: NaN };
  for (const mode of ['libuv', 'sync'] as const) {
    const d = fs.mkdtempSync(join(dir, 'fifo-'));
    const fifo = join(d, 'f');
    execFileSync('mkfifo', ['-m', '600', fifo]);
    const child = fork(here('./workers/host-fifo-wake.js'), [fifo, mode], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const q: unknown[] = [];
    let wake: (() => void) | undefined;
    child.on('message', (m) => {
      q.push(m);
      wake?.();
    });
    const next = async () => {
      while (q.length === 0) await new Promise<void>((r) => (wake = r));
      return q.shift();
    };
    try {
      await next();
      if (mode === 'sync') child.send('go');
      const wfd = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
      const lat: number[] = [];
      for (let r = 0; r < rounds; r++) {
        await sleep(2 + Math.random() * 3); // the reader is asleep
        const t0 = process.hrtime.bigint();
        fs.writeSync(wfd, Buffer.from([0x62]));
        const { t } = (await next()) as { t: string };
        lat.push(Number(BigInt(t) - t0) / 1000);
      }
      fs.writeSync(wfd, Buffer.from([0x71]));
      fs.closeSync(wfd);
      await new Promise((r) => child.once('exit', r));
      out[mode] = pct(lat.sort((a, b) => a - b), 0.5);
    } finally {
      child.kill('SIGKILL');
      fs.rmSync(d, { recursive: true, force: true });
    }
  }
  return out;
}

/** Wall ms of one spawnSync of `cmd args` (which must exit 0). */
export function wallMs(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): number {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { env, stdio: 'ignore' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}`);
  return performance.now() - t0;
}
