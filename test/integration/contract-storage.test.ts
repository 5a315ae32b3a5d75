/**
 * STORAGE.md section 3.5, the parts a client sees: when commits fail, every
 * request that needs a write answers the nonfatal `unavailable` and nothing
 * of it is acknowledged or visible later, while requests that need no write
 * keep working; the connection stays open.
 */
import { describe, expect, it } from 'vitest';
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
