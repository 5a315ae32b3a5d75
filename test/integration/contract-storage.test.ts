/**
 * STORAGE.md section 3.5, the parts a client sees: when commits fail, every
 * request that needs a write answers the nonfatal `unavailable` and nothing
 * of it is acknowledged or visible later, while requests that need no write
 * keep working; the connection stays open.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RawConnection } from '../helpers/raw.ts';
import { removeDir, spawnServer, tempDir, testPostgres } from '../helpers/server.ts';
import { api } from '../helpers/ws.ts';
import { errorOf, expectNoMoreFrames, PW, serverFixture } from '../helpers/users.ts';

const f = serverFixture(['--user-rate', '0']);

/** Makes every commit fail as a full disk (SQLite) or a lost server (PostgreSQL) does, until the returned function is called. */
function breakCommits(): () => void {
  const store = f.srv.server.core.store;
  const original = store.transaction.bind(store);
  const failure = store.dialect === 'sqlite' ? { code: 'ERR_SQLITE_ERROR', errcode: 13 } : { code: '08006' };
  store.transaction = () => Promise.reject(Object.assign(new Error('the store failed'), failure));
  return () => {
    store.transaction = original;
  };
}

describe('unavailable', () => {
  it('writes of every module answer unavailable; reads keep working; nothing refused shows up afterwards', async () => {
    const [a, b] = await f.users('ua', 'ub');
    const sa = await f.loggedIn(a!);
    const sb = await f.loggedIn(b!);
    const r = `ur-${a}`;
    sa.send('join', r);
    expect(await sa.nextN(2)).toEqual([`room,${r},joined,${a}`, 'ok']);
    sa.send('say', r, 'kept');
    const kept = (await sa.nextN(2))[0]!;
    const restore = breakCommits();
    try {
      expect(await sa.ask('say', r, 'lost')).toMatch(errorOf('unavailable'));
      expect(await sa.ask('join', `${r}-2`)).toMatch(errorOf('unavailable'));
      expect(await sa.ask('friend_request', b!)).toMatch(errorOf('unavailable'));
      expect(await sa.ask('send', b!, 'lost')).toMatch(errorOf('unavailable'));
      expect(await sa.ask('register', `${a}x`, PW)).toMatch(errorOf('unavailable'));
      // no write needed: answered as usual
      expect(await sa.ask('whoami')).toBe(`user,${a}`);
      expect(await sa.ask('rooms')).toBe(`rooms,${r}`);
      expect(await sa.ask('members', r)).toBe(`members,${r},${a}`);
      expect(await sa.ask('history', r, 'last', '5')).toBe(`history,${r},1,${kept.split(',').slice(3).join(',')}`);
      expect(await sa.ask('presence', b!)).toBe(`presence,${b},online`);
      expect(await sa.ask('nop')).toBe('');
    } finally {
      restore();
    }
    // nothing refused was pushed or stored
    await expectNoMoreFrames(sb);
    expect(await sa.ask('history', r, 'last', '5')).toMatch(new RegExp(`^history,${r},1,`));
    expect(await sa.ask('rooms')).toBe(`rooms,${r}`);
    expect(await sb.ask('friend_requests')).toBe('friend_requests');
    expect(await sa.ask('register', `${a}x`, PW)).toBe('ok');
    expect(sa.closed).toBe(false);
  });
});

describe('secrets (PROTOCOL.md: passwords never stored or logged in clear text; GATEWAYS.md: tokens stored hashed)', () => {
  it('neither a password nor a token appears in the logs or, on SQLite, in the data files', async () => {
    const data = tempDir();
    const s = await spawnServer(['--data', data, '--http-port', '0', '--log-level', 'trace']);
    try {
      const httpPort = (JSON.parse(await s.waitForLine(/"transport":"http"/)) as { port: number }).port;
      const secret = `Pw-${Date.now()}-secret`;
      const c = await RawConnection.open(s.port);
      expect(await c.ask('register', 'secretive', secret)).toBe('ok');
      expect(await c.ask('login', 'secretive', secret)).toBe('ok');
      expect(await c.ask('login', 'secretive', `${secret}-wrong`)).toMatch(/^error,nonfatal,wrong_user_or_password/);
      const login = await api(`http://127.0.0.1:${httpPort}`, 'POST', '/api/login', { user: 'secretive', password: secret });
      const token = login.json.token as string;
      expect(await c.ask('token', token)).toBe('ok');
      c.close();
      s.proc.kill('SIGTERM');
      expect(await s.exited).toBe(0);
      const logs = s.lines.join('\n');
      expect(logs).not.toContain(secret);
      expect(logs).not.toContain(token);
      if (testPostgres() === undefined) {
        for (const file of readdirSync(data)) {
          const bytes = readFileSync(join(data, file));
          expect(bytes.includes(Buffer.from(secret)), file).toBe(false);
          expect(bytes.includes(Buffer.from(token)), file).toBe(false);
        }
      }
    } finally {
      s.proc.kill('SIGKILL');
      removeDir(data);
    }
  });
});
