import { defineConfig } from 'vitest/config';
import { postgresBin } from './tools/postgres.ts';

/** Pure unit tests run once; everything that starts a server runs against SQLite and against PostgreSQL. */
const UNIT = ['test/wire/**', 'test/text/**', 'test/tools/console-view.test.ts', 'test/tools/bench.test.ts'];

const hasPostgres = postgresBin() !== undefined;
if (!hasPostgres) process.stdout.write('PostgreSQL is not installed (Debian package postgresql): the postgres test project is skipped\n');

export default defineConfig({
  test: {
    pool: 'forks',
    testTimeout: 20_000,
    hookTimeout: 60_000,
    fileParallelism: true,
    maxWorkers: 2,
    reporters: ['default', './test/summary-reporter.ts'],
    projects: [
      { extends: true as const, test: { name: 'sqlite', include: ['test/**/*.test.ts'] } },
      ...(hasPostgres
        ? [{ extends: true as const, test: { name: 'postgres', include: ['test/**/*.test.ts'], exclude: UNIT, globalSetup: ['test/helpers/postgres-setup.ts'] } }]
        : []),
    ],
  },
});
