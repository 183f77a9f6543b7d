/**
 * Running a command under latchkey: spawn it (no shell, stdio inherited,
 * so it reads and writes the terminal as if run directly), forward the
 * termination signals to it, and turn how it ended into an exit status.
 *
 * The child stays in latchkey's process group, as with flock(1): it can
 * read the terminal, and a Ctrl-C typed there reaches it directly. latchkey
 * forwards every SIGINT, SIGTERM, SIGHUP and SIGQUIT it receives as well,
 * which is what `kill <latchkey pid>` needs; so a Ctrl-C from the terminal
 * reaches the child twice (once from the terminal, once forwarded).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, signalStatus } from './exit-codes.js';

/** The signals latchkey forwards to the command (and that stop a wait for the lock). */
export const kForwarded: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];

/** How the command ended. */
export type Outcome =
  | { readonly kind: 'exited'; readonly code: number }
  | { readonly kind: 'signaled'; readonly signal: NodeJS.Signals }
  | { readonly kind: 'failed'; readonly error: NodeJS.ErrnoException };

export interface Running {
  /** Undefined when spawn refused the arguments outright. */
  readonly child: ChildProcess | undefined;
  readonly ended: Promise<Outcome>;
}

/** Start `command` with `args`; `ended` settles once, with how it ended (it never rejects). */
export function start(command: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Running {
  let child: ChildProcess;
  try {
    child = spawn(command, args, { stdio: 'inherit', env });
  } catch (err) {
    // Arguments spawn refuses outright (a NUL byte): nothing was started.
    return { child: undefined, ended: Promise.resolve({ kind: 'failed', error: err as NodeJS.ErrnoException }) };
  }
  const ended = new Promise<Outcome>((resolve) => {
    // A command that cannot be started reports 'error' and never 'exit'; one that ran reports 'exit'.
    // `on`, not `once`: a later 'error' (a failed kill) must not go unhandled.
    child.on('error', (error: NodeJS.ErrnoException) => {
      if (child.pid === undefined) resolve({ kind: 'failed', error });
    });
    child.once('exit', (code, signal) => {
      resolve(signal !== null ? { kind: 'signaled', signal } : { kind: 'exited', code: code ?? 0 });
    });
  });
  return { child, ended };
}

const kWhy: Record<string, string> = {
  ENOENT: 'command not found',
  ENOTDIR: 'command not found (a component of its path is not a directory)',
  EACCES: 'permission denied (not executable, or a directory)',
  ENOEXEC: 'not in an executable format',
};

/** The exit status for an outcome; a failure to start is described in `message`. */
export function statusOf(outcome: Outcome, command: string): { status: number; message?: string } {
  switch (outcome.kind) {
    case 'exited':
      return { status: outcome.code };
    case 'signaled':
      return { status: signalStatus(outcome.signal) };
    case 'failed': {
      const { code } = outcome.error;
      const notFound = code === 'ENOENT' || code === 'ENOTDIR';
      return {
        status: notFound ? EXIT_NOT_FOUND : EXIT_CANNOT_EXECUTE,
        message: `cannot run ${JSON.stringify(command)}: ${kWhy[code ?? ''] ?? outcome.error.message}`,
      };
    }
  }
}

/**
 * Call `onSignal` for each forwarded signal latchkey receives, instead of
 * being terminated by it; returns the function that restores the defaults.
 */
export function catchSignals(onSignal: (signal: NodeJS.Signals) => void): () => void {
  for (const s of kForwarded) process.on(s, onSignal);
  return () => {
    for (const s of kForwarded) process.off(s, onSignal);
  };
}

/** Send `signal` to the child if it still runs (a child that exited meanwhile is not an error). */
export function forward(child: ChildProcess | undefined, signal: NodeJS.Signals): void {
  if (child === undefined || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    child.kill(signal);
  } catch {
    // gone between the check and the kill
  }
}

/** Run `command` to its end, forwarding signals: its exit status (demo, bench). */
export async function runForwarding(command: string, args: readonly string[], describe: string): Promise<number> {
  let running: Running | undefined;
  const restore = catchSignals((signal) => forward(running?.child, signal));
  try {
    running = start(command, args);
    const { status, message } = statusOf(await running.ended, describe);
    if (message !== undefined) process.stderr.write(`latchkey: ${message}\n`);
    return status;
  } finally {
    restore();
  }
}
