/** A graceful stop (SIGTERM) lets HTTP requests that are running finish, as it does TCP and WebSocket ones. */
import { describe, expect, it } from 'vitest';
import { removeDir, spawnServer, tempDir } from '../helpers/server.ts';
import { eventually } from '../helpers/eventually.ts';
import { api } from '../helpers/ws.ts';
import { PW } from '../helpers/users.ts';

describe('SIGTERM with HTTP requests in flight', () => {
  it('answers them before exiting 0', async () => {
    const data = tempDir();
    // about a second per hash, one at a time: two registers are both in flight for a while
    const s = await spawnServer(['--data', data, '--http-port', '0', '--argon2-memory-kib', '65536', '--argon2-time', '12', '--hash-concurrency', '1']);
    try {
      const b = `http://127.0.0.1:${(JSON.parse(await s.waitForLine(/"transport":"http"/)) as { port: number }).port}`;
      const registers = ['drainhttpa', 'drainhttpb'].map((user) => api(b, 'POST', '/api/register', { user, password: PW }).catch((err: Error) => err));
      // the first is hashing and the second waits for it
      await eventually(async () => expect(await (await fetch(`${b}/metrics`)).text()).toMatch(/^textserver_argon2_queue_length 1$/m));
      s.proc.kill('SIGTERM');
      await s.waitForLine(/shutting down/);
      const answers = await Promise.all(registers);
      expect(answers.map((a) => (a instanceof Error ? a.message : a.status))).toEqual([201, 201]);
      expect(await s.exited).toBe(0);
    } finally {
      s.proc.kill('SIGKILL');
      removeDir(data);
    }
  });
});
