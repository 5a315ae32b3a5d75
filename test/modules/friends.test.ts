/** MODULES.md friends: every row and push, offline delivery, --friends-only. */
import { describe, expect, it } from 'vitest';
import { startServer, removeDir, tempDir } from '../helpers/server.ts';
import { RawConnection } from '../helpers/raw.ts';
import { errorOf as err, expectNoMoreFrames, freshUsers, loggedIn as login, PW, serverFixture } from '../helpers/users.ts';

const fx = serverFixture();
const loggedIn = (u: string) => fx.loggedIn(u);
const users = (...p: string[]) => fx.users(...p);

describe('friends', () => {
  it('needs a login and the right number of arguments', async () => {
    const c = await fx.open();
    expect(await c.ask('friends')).toMatch(err('not_logged_in'));
    expect(await c.ask('friend_request', 'x')).toMatch(err('not_logged_in'));
    const [a] = await users('a');
    const s = await loggedIn(a!);
    for (const req of [['friend_request'], ['friend_accept'], ['friend_deny', 'a', 'b'], ['friend_remove'], ['friends', 'x'], ['friend_requests', 'x']]) {
      expect(await s.ask(...req)).toMatch(err('syntax'));
    }
  });

  it('request, accept: pushes to both, lists on both sides', async () => {
    const [a, b] = await users('a', 'b');
    const sa = await loggedIn(a!);
    const sb1 = await loggedIn(b!);
    const sb2 = await loggedIn(b!);
    expect(await sa.ask('friend_request', 'nobody-here')).toMatch(err('user_not_found'));
    expect(await sa.ask('friend_request', a!.toUpperCase())).toMatch(err('invalid_name'));
    expect(await sa.ask('friend_request', b!)).toBe('ok');
    expect(await sb1.next()).toBe(`friend,request,${a}`);
    expect(await sb2.next()).toBe(`friend,request,${a}`);
    expect(await sa.ask('friend_request', b!)).toBe('ok'); // repeated: nothing changes
    await expectNoMoreFrames(sb1);
    expect(await sb1.ask('friend_requests')).toBe(`friend_requests,${a}`);
    expect(await sa.ask('friend_requests')).toBe('friend_requests');
    sb1.send('friend_accept', a!);
    expect(await sb1.nextN(2)).toEqual([`friend,added,${a}`, 'ok']);
    expect(await sb2.next()).toBe(`friend,added,${a}`);
    expect(await sa.next()).toBe(`friend,added,${b}`);
    expect(await sa.ask('friends')).toBe(`friends,${b}`);
    expect(await sb2.ask('friends')).toBe(`friends,${a}`);
    expect(await sb1.ask('friend_requests')).toBe('friend_requests');
    expect(await sa.ask('friend_request', b!)).toMatch(err('already_friends'));
    expect(await sb1.ask('friend_accept', a!)).toMatch(err('no_request'));
  });

  it('a request to someone who asked you accepts theirs', async () => {
    const [a, b] = await users('a', 'b');
    const sa = await loggedIn(a!);
    const sb = await loggedIn(b!);
    expect(await sa.ask('friend_request', b!)).toBe('ok');
    expect(await sb.next()).toBe(`friend,request,${a}`);
    sb.send('friend_request', a!);
    expect(await sb.nextN(2)).toEqual([`friend,added,${a}`, 'ok']);
    expect(await sa.next()).toBe(`friend,added,${b}`);
    expect(await sa.ask('friends')).toBe(`friends,${b}`);
  });

  it('deny pushes denied to the asker; deny and accept without a request are no_request', async () => {
    const [a, b] = await users('a', 'b');
    const sa = await loggedIn(a!);
    const sb = await loggedIn(b!);
    expect(await sb.ask('friend_deny', a!)).toMatch(err('no_request'));
    expect(await sb.ask('friend_accept', 'nobody-here')).toMatch(err('no_request'));
    expect(await sa.ask('friend_request', b!)).toBe('ok');
    await sb.next();
    expect(await sb.ask('friend_deny', a!)).toBe('ok');
    expect(await sa.next()).toBe(`friend,denied,${b}`);
    expect(await sb.ask('friend_requests')).toBe('friend_requests');
    expect(await sa.ask('friends')).toBe('friends');
  });

  it('remove pushes removed to both; removing a non-friend is not_friends', async () => {
    const [a, b] = await users('a', 'b');
    const sa = await loggedIn(a!);
    const sb = await loggedIn(b!);
    expect(await sa.ask('friend_remove', b!)).toMatch(err('not_friends'));
    expect(await sa.ask('friend_request', b!)).toBe('ok');
    await sb.next();
    sb.send('friend_accept', a!);
    await sb.nextN(2);
    await sa.next();
    sa.send('friend_remove', b!);
    expect(await sa.nextN(2)).toEqual([`friend,removed,${b}`, 'ok']);
    expect(await sb.next()).toBe(`friend,removed,${a}`);
    expect(await sa.ask('friends')).toBe('friends');
  });

  it('lists friends sorted and requests oldest first', async () => {
    const [me, z, m, x] = await users('me', 'zz', 'mm', 'xx');
    for (const u of [z, m, x]) {
      const s = await loggedIn(u!);
      expect(await s.ask('friend_request', me!)).toBe('ok');
      s.close();
    }
    const s = await RawConnection.open(fx.srv.port);
    fx.opened.push(s);
    s.send('login', me!, PW);
    expect(await s.nextN(4)).toEqual(['ok', `friend,request,${z}`, `friend,request,${m}`, `friend,request,${x}`]);
    expect(await s.ask('friend_requests')).toBe(`friend_requests,${z},${m},${x}`);
    for (const u of [z, m, x]) {
      s.send('friend_accept', u!);
      await s.nextN(2);
    }
    expect(await s.ask('friends')).toBe(`friends,${[z, m, x].sort().join(',')}`);
  });

  it('pushes to an offline user are stored and delivered after their login', async () => {
    const [a, b] = await users('a', 'b');
    const sa = await loggedIn(a!);
    expect(await sa.ask('friend_request', b!)).toBe('ok');
    const sb = await RawConnection.open(fx.srv.port);
    fx.opened.push(sb);
    sb.send('login', b!, PW);
    expect(await sb.nextN(2)).toEqual(['ok', `friend,request,${a}`]);
    sb.send('friend_accept', a!);
    expect(await sb.nextN(2)).toEqual([`friend,added,${a}`, 'ok']);
    // b's login announces b to b's friends as read after the login: when that read comes after the
    // friendship committed (the friend pushes are durable appends now, each its own commit), a hears it too
    const first = await sa.next();
    expect(first === `presence,${b},online` ? await sa.next() : first).toBe(`friend,added,${b}`);
    sa.close();
    expect(await sb.next()).toBe(`presence,${a},offline`); // friends hear presence changes
    sb.send('friend_remove', a!);
    expect(await sb.nextN(2)).toEqual([`friend,removed,${a}`, 'ok']);
    const back = await RawConnection.open(fx.srv.port);
    fx.opened.push(back);
    back.send('login', a!, PW);
    expect(await back.nextN(2)).toEqual(['ok', `friend,removed,${b}`]);
  });

  it('friendship survives a restart', async () => {
    const own = await startServer([], tempDir());
    const [a, b] = await freshUsers(own.port, 'a', 'b');
    const sa = await login(own.port, a!);
    expect(await sa.ask('friend_request', b!)).toBe('ok');
    const sb = await login(own.port, b!);
    expect(await sb.next()).toBe(`friend,request,${a}`);
    sb.send('friend_accept', a!);
    await sb.nextN(2);
    // b's online announcement may find the friendship already made (its audience is read after b's login): skipped
    let added = await sa.next();
    if (added === `presence,${b},online`) added = await sa.next();
    expect(added).toBe(`friend,added,${b}`);
    sa.close();
    sb.close();
    await own.stop();
    const again = await startServer([], own.data);
    const s = await login(again.port, a!);
    expect(await s.ask('friends')).toBe(`friends,${b}`);
    s.close();
    await again.stop();
    removeDir(own.data);
  });
});

describe('--friends-only', () => {
  it('send to a non-friend answers not_friends; friends and yourself still work', async () => {
    const own = await startServer(['--friends-only']);
    try {
      const [a, b, c] = await freshUsers(own.port, 'a', 'b', 'c');
      const sa = await login(own.port, a!);
      const sb = await login(own.port, b!);
      expect(await sa.ask('send', b!, 'hi')).toMatch(err('not_friends'));
      expect(await sa.ask('send', 'nobody-here', 'hi')).toMatch(err('user_not_found'));
      expect(await sa.ask('friend_request', b!)).toBe('ok');
      await sb.next();
      sb.send('friend_accept', a!);
      await sb.nextN(2);
      await sa.next();
      expect(await sa.ask('send', b!, 'hi')).toBe('ok');
      expect(await sb.next()).toBe(`send,${a},hi`);
      expect(await sa.ask('send', c!, 'hi')).toMatch(err('not_friends'));
      sa.send('send', a!, 'self');
      expect(await sa.nextN(2)).toEqual([`send,${a},self`, 'ok']);
      sa.close();
      sb.close();
    } finally {
      await own.stop();
      removeDir(own.data);
    }
  });

  it('without the flag anyone can send', async () => {
    const [a, b] = await users('a', 'b');
    const sa = await loggedIn(a!);
    expect(await sa.ask('send', b!, 'hi')).toBe('ok');
  });
});
