import { defineConfig } from 'vitest/config';
import { postgresBin } from './tools/postgres.ts';
import { redisBin } from './tools/redis.ts';

/**
 * Unit tests run once (those of the core on a SQLite store of their own);
 * everything that starts a server runs against SQLite and against PostgreSQL.
 */
const UNIT = [
  'test/wire/**',
  'test/text/**',
  'test/transport/**',
  'test/config.test.ts',
  'test/core/session.test.ts',
  'test/core/hub.test.ts',
  'test/core/module-loader.test.ts',
  'test/core/error-table.test.ts',
  'test/tools/console-view.test.ts',
  'test/tools/bench.test.ts',
  'test/store/sqlite-wal.test.ts',
  // the bus and presence against a throwaway redis-server: nothing there depends on the store
  'test/bus/**',
];

const hasPostgres = postgresBin() !== undefined;
if (!hasPostgres) process.stdout.write('PostgreSQL is not installed (Debian package postgresql): the postgres test project is skipped\n');
if (redisBin() === undefined) process.stdout.write('redis-server is not installed (Debian package redis-server): the tests that need Redis are skipped\n');
/** Every project gets the throwaway redis-server (the cluster tests need it beside PostgreSQL); it costs a few milliseconds to start. */
const REDIS_SETUP = 'test/helpers/redis-setup.ts';

export default defineConfig({
  test: {
    pool: 'forks',
    testTimeout: 20_000,
    hookTimeout: 60_000,
    fileParallelism: true,
    maxWorkers: 2,
    reporters: ['default', './test/summary-reporter.ts'],
    // npm run coverage: the code run in the test processes (servers started as child processes are not seen)
    coverage: { provider: 'v8', include: ['src/**', 'modules/**'], reporter: ['text-summary', 'json-summary', 'html'] },
    projects: [
      // the cluster suite needs PostgreSQL (a SQLite file is one process's): postgres project only
      { extends: true as const, test: { name: 'sqlite', include: ['test/**/*.test.ts'], exclude: ['test/cluster/**'], globalSetup: [REDIS_SETUP] } },
      ...(hasPostgres
        ? [
            {
              extends: true as const,
              test: { name: 'postgres', include: ['test/**/*.test.ts'], exclude: UNIT, globalSetup: ['test/helpers/postgres-setup.ts', REDIS_SETUP] },
            },
          ]
        : []),
    ],
  },
});
