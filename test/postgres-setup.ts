/**
 * vitest global setup: the cluster tests need a PostgreSQL server. When
 * LATCHKEY_PG_URL is set (CI's .ci/run starts one), it is used as is;
 * otherwise this starts a throwaway one with .ci/postgres (which installs
 * Debian's package when the server is missing) and stops it afterwards.
 * If neither works the cluster tests fail, loudly: they never skip.
 */
import { execFileSync, execSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export default function setup(): (() => void) | undefined {
  if (process.env.LATCHKEY_PG_URL) return undefined;
  const script = fileURLToPath(new URL('../.ci/postgres', import.meta.url));
  let out: string;
  try {
    out = execFileSync(script, [String(54400 + (process.pid % 500))], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  } catch (err) {
    console.error(`latchkey tests: could not start PostgreSQL (${(err as Error).message.split('\n')[0]}); the cluster tests will fail. Set LATCHKEY_PG_URL to a server.`);
    return undefined;
  }
  const [url, restart] = out.trim().split('\n');
  process.env.LATCHKEY_PG_URL = url;
  process.env.LATCHKEY_PG_RESTART = restart;
  return () => {
    try {
      execSync(restart!.replace(/ restart$/, ' stop'), { stdio: 'ignore' });
    } catch {
      // it dies with the machine anyway
    }
    const data = /-D (\S+)\/db /.exec(restart!)?.[1];
    if (data !== undefined && data.startsWith('/tmp/latchkey-pg.')) rmSync(data, { recursive: true, force: true });
  };
}
