/**
 * A short run of the delivery checker (`npm run check:delivery`, DELIVERY.md §4):
 * a real server process killed with SIGKILL and restarted, clients that drop
 * and crash, every inbox read back from 0. In the postgres project the server
 * stores into the throwaway PostgreSQL, and a `--cluster` run (three nodes,
 * a redis-server of the checker's own that it restarts) runs as well.
 * Skipped only while the server lacks `resume`; it runs by itself once the
 * inbox is there.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { nodeArgs, ROOT, storeArgs, tempDir, removeDir, testPostgres } from './helpers/server.ts';
import { inboxSupported } from './client/inbox-support.ts';
import { redisBin } from '../tools/redis.ts';

const hasInbox = await inboxSupported();
/** The cluster mode needs PostgreSQL (the postgres project's) and redis-server. */
const canCluster = testPostgres() !== undefined && redisBin() !== undefined;

function runChecker(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const [cmd, argv] = nodeArgs('tools/check-delivery.ts', args);
  const child = spawn(cmd, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, out, err })));
}

describe('check:delivery', () => {
  it.skipIf(!hasInbox)(
    'passes a 15-second run with server kills, drops and crashes',
    async () => {
      const dir = tempDir();
      try {
        const store = await storeArgs(dir); // [] on SQLite: the checker then uses a --data of its own
        const { code, out, err } = await runChecker(['--seconds', '15', '--clients', '12', '--seed', '42', '--kill-every', '3', '--drop-every', '2', ...store]);
        const report = `${out}\n${err}`;
        expect(out, report).toMatch(/^PASS every acknowledged send is in the recipient’s inbox exactly once: [1-9]\d* passed, 0 failed$/m);
        expect(out, report).not.toMatch(/^FAIL/m);
        expect(Number(/^(\d+) server kills/m.exec(out)?.[1]), report).toBeGreaterThan(0);
        expect(code, report).toBe(0);
      } finally {
        removeDir(dir);
      }
    },
    180_000,
  );

  it.skipIf(!hasInbox || !canCluster)(
    'passes a 15-second --cluster run: three nodes killed one or two at a time, Redis restarted, clients on any node',
    async () => {
      const dir = tempDir();
      try {
        const store = await storeArgs(dir); // a database of its own on the project's PostgreSQL
        const { code, out, err } = await runChecker([
          '--cluster',
          ...['--seconds', '15', '--clients', '12', '--seed', '43', '--kill-every', '3', '--redis-every', '3', '--drop-every', '2'],
          ...store,
        ]);
        const report = `${out}\n${err}`;
        expect(out, report).toMatch(/^PASS every acknowledged send is in the recipient’s inbox exactly once: [1-9]\d* passed, 0 failed$/m);
        expect(out, report).toMatch(/^PASS each client saw a dense stream live, never reset: 12 passed, 0 failed$/m);
        expect(out, report).not.toMatch(/^FAIL/m);
        expect(Number(/^(\d+) node kills/m.exec(out)?.[1]), report).toBeGreaterThan(0);
        expect(Number(/, (\d+) Redis restarts/m.exec(out)?.[1]), report).toBeGreaterThan(0);
        expect(code, report).toBe(0);
      } finally {
        removeDir(dir);
      }
    },
    240_000,
  );

  it('refuses --cluster on a SQLite store with exit code 2', async () => {
    const { code, err } = await runChecker(['--cluster', '--store', './some.db']);
    expect(code).toBe(2);
    expect(err).toMatch(/--cluster needs a PostgreSQL store/);
  });

  it('refuses bad flags with the usage and exit code 2', async () => {
    const { code, err } = await runChecker(['--clients', 'many']);
    expect(code).toBe(2);
    expect(err).toMatch(/--clients: many is not a number/);
    expect(err).toMatch(/^usage: npm run check:delivery/m);
  });
});
