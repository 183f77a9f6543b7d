/**
 * vitest global setup: the Redis tests (redis-*.test.ts) need a redis-server.
 * When LATCHKEY_REDIS_URL is set (CI's .ci/run starts one), it is used as is;
 * otherwise this starts a throwaway one with .ci/redis (which installs
 * Debian's package when the server is missing) and stops it afterwards.
 * If neither works the Redis tests fail, loudly: they never skip.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export default function setup(): (() => void) | undefined {
  if (process.env.LATCHKEY_REDIS_URL) return undefined;
  const script = fileURLToPath(new URL('../.ci/redis', import.meta.url));
  let out: string;
  try {
    out = execFileSync(script, [String(63800 + (process.pid % 500))], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  } catch (err) {
    console.error(`latchkey tests: could not start redis-server (${(err as Error).message.split('\n')[0]}); the Redis tests will fail. Set LATCHKEY_REDIS_URL to a server.`);
    return undefined;
  }
  const [url, restart] = out.trim().split('\n');
  process.env.LATCHKEY_REDIS_URL = url;
  process.env.LATCHKEY_REDIS_RESTART = restart;
  return () => {
    const dir = dirname(restart!);
    if (!dir.startsWith('/tmp/latchkey-redis.')) return;
    try {
      process.kill(Number(readFileSync(`${dir}/pid`, 'utf8')), 'SIGKILL');
    } catch {
      // gone already; it dies with the machine anyway
    }
    rmSync(dir, { recursive: true, force: true });
  };
}
