import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Each test file in its own child process: its main thread is a real
    // main thread, as latchkey's default table expects.
    pool: 'forks',
    // A PostgreSQL server for the cluster tests, unless LATCHKEY_PG_URL names one;
    // a redis-server for the Redis tests, unless LATCHKEY_REDIS_URL names one.
    globalSetup: ['test/postgres-setup.ts', 'test/redis-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
