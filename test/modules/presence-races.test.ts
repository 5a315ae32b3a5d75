/** Presence under quick changes: friends end up seeing each user's real state, the changes in order. */
import { describe, expect, it } from 'vitest';
import { RawConnection } from '../helpers/raw.ts';
import { eventually } from '../helpers/eventually.ts';
import { PW, serverFixture } from '../helpers/users.ts';

const fx = serverFixture();

describe('presence: quick logins and logouts', () => {
  it('pushes each user’s changes in order, so friends see online last when the user stays on', async () => {
    const USERS = 8;
    const CYCLES = 12;
    const [watcherName, ...names] = await fx.users('watch', ...Array.from({ length: USERS }, (_, i) => `flip${i}_`));
    const watcher = await fx.loggedIn(watcherName!);
    for (const n of names) {
      const s = await fx.loggedIn(n);
      expect(await s.ask('friend_request', watcherName!)).toBe('ok');
      watcher.send('friend_accept', n);
      // the request, friend added, maybe an online (the login's announcement may already see the friendship), ok
      while ((await watcher.next()) !== 'ok');
      s.close();
      while ((await watcher.next()) !== `presence,${n},offline`);
    }
    const pushes = new Map<string, string[]>(names.map((n) => [n, []]));
    let read = watcher.frames.length; // the offlines above are read
    const collect = () => {
      for (const f of watcher.frames.slice(read)) {
        const [word, user, state] = f.split(',');
        if (word === 'presence') pushes.get(user!)?.push(state!);
      }
      read = watcher.frames.length;
    };

    // every user logs in and out as fast as it can, all at once, then stays logged in
    const stay = await Promise.all(
      names.map(async (n) => {
        for (let i = 0; i < CYCLES; i++) {
          const c = await RawConnection.open(fx.srv.port);
          c.send('login', n, PW);
          await c.next();
          c.close();
        }
        return fx.loggedIn(n);
      }),
    );
    expect(stay).toHaveLength(USERS);

    // online and offline alternate for every user: a push overtaken by a later one shows as a repeat, which never heals
    let repeat: string | undefined;
    await eventually(() => {
      collect();
      for (const [n, states] of pushes) {
        if (states.some((s, i) => i > 0 && s === states[i - 1])) return void (repeat = `${n}: ${states.join(' ')}`);
        expect(states.at(-1), n).toBe('online');
      }
    }, 10_000);
    expect(repeat).toBeUndefined();
  });
});
