/**
 * The few things the Redis engine (redis.ts) needs of a connection, over
 * node-redis's core package, @redis/client (an optional peer dependency:
 * only users of a redis:// cluster URL install it; loaded on first use by
 * bridge/drivers.ts). Chosen over ioredis after measuring both under the
 * same engine: equal or faster on every floor, clearly faster on a
 * pipelined release, and the client Redis itself develops first.
 *
 * A Conn never reconnects by itself, never queues a command while offline
 * and never sends one again after a reconnect: the engine decides all of
 * that (an acquire or a release sent twice behind its back could run twice).
 */
import type * as RedisClient from '@redis/client';
import { loadDriver } from '../drivers.js';

export type Reply = null | number | string | Reply[];

export interface Conn {
  call(args: readonly (string | number)[]): Promise<Reply>;
  /** FCALL, loading the library first when the server does not know the function (restarted, FUNCTION FLUSH). */
  fcall(library: string, fn: string, args: readonly (string | number)[]): Promise<Reply>;
  /** Called once when the connection is gone (closed by either side, reset, or destroy()), with the error if any. */
  onEnd(cb: (err?: Error) => void): void;
  quit(): Promise<void>;
  destroy(): void;
}

export interface ConnectOptions {
  /** CLIENT SETNAME at connect: other agents tell a live session from a dead one by it. */
  readonly name: string;
  readonly connectTimeout: number;
}

/** Load a Functions library unless the server has it (a second load of the same name is refused: fine). */
export async function loadLibrary(call: Conn['call'], code: string): Promise<void> {
  try {
    await call(['FUNCTION', 'LOAD', code]);
  } catch (err) {
    if (!/already exists/i.test((err as Error).message)) throw err;
  }
}

// A retry goes out when the error reply comes back: replies come in order, so a cancel sent after an
// acquire that both failed this way is retried after it too.
async function runFunction(call: Conn['call'], library: string, fn: string, args: readonly (string | number)[]): Promise<Reply> {
  try {
    return await call(['FCALL', fn, 0, ...args]);
  } catch (err) {
    if (!/Function not found/i.test((err as Error).message)) throw err;
    await loadLibrary(call, library);
    return call(['FCALL', fn, 0, ...args]);
  }
}

/** @redis/client, loaded on first use (bridge/drivers.ts: ERR_LOCK_BACKEND naming the package when it is missing). */
const driver = () => loadDriver<typeof RedisClient>('@redis/client', 'redis');

/**
 * The client class, made once. createClient() makes a class per distinct
 * options object (a one-entry cache keyed by their JSON), attaching every
 * command: ~50 ms here, each time the options differ (another connection
 * name). The engine sends raw commands only; one class serves every
 * connection.
 */
let clientClass: ReturnType<typeof RedisClient.RedisClient.factory<{}, {}, {}, 2>> | undefined;
const makeClient = () => (clientClass ??= driver().RedisClient.factory<{}, {}, {}, 2>({ RESP: 2 }));

/** Connect to `url` (redis:// or rediss://; user, password and database number as the URL gives them). */
export async function connect(url: string, o: ConnectOptions): Promise<Conn> {
  const c = makeClient()({
    url, disableOfflineQueue: true, name: o.name,
    socket: { reconnectStrategy: false, connectTimeout: o.connectTimeout, keepAlive: true, keepAliveInitialDelay: 5000, noDelay: true },
  });
  let endCb: (err?: Error) => void = () => {};
  let lastErr: Error | undefined, ended = false;
  c.on('error', (err: Error) => (lastErr = err));
  // With reconnectStrategy: false, a broken connection ends with 'terminated' (and 'error'), a destroy() with 'end'.
  const end = () => {
    if (ended) return;
    ended = true;
    endCb(lastErr);
  };
  c.on('end', end);
  c.on('terminated', (cause: Error) => {
    lastErr ??= cause;
    end();
  });
  try {
    await c.connect();
  } catch (err) {
    ended = true;
    try {
      c.destroy();
    } catch {
      // never connected
    }
    throw err;
  }
  const call = (args: readonly (string | number)[]) => c.sendCommand(args.map(String)) as Promise<Reply>;
  return {
    call,
    fcall: (library, fn, args) => runFunction(call, library, fn, args),
    onEnd(cb) {
      let called = false;
      endCb = (err) => {
        if (called) return;
        called = true;
        cb(err);
      };
      if (ended) endCb(lastErr);
    },
    async quit() {
      if (ended) return;
      await c.close().catch(() => c.destroy());
    },
    destroy() {
      if (!ended) c.destroy();
    },
  };
}
