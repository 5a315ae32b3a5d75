/**
 * MODULES.md read line by line as an outside tester would: the statements
 * rooms.test.ts, friends.test.ts and presence.test.ts leave out (invalid_room
 * on every room command, escaped texts in pushes and pages, the byte-bounded
 * `more` on every history mode, typing renewal and the last connection,
 * names as registered in pushes).
 */
import { describe, expect, it, vi } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import { removeDir, startServer, tempDir } from '../helpers/server.ts';
import { errorOf as err, expectNoMoreFrames, freshUsers, loggedIn, PW, serverFixture } from '../helpers/users.ts';
import type { RawConnection } from '../helpers/raw.ts';

// the default typing timeout: MODULES.md says 10 seconds
const fx = serverFixture();
let roomNo = 0;
const room = () => `cm-${++roomNo}`;

async function join(s: RawConnection, r: string): Promise<void> {
  s.send('join', r);
  expect((await s.nextN(2))[1]).toBe('ok');
}

/** A history reply as messages of four fields, and whether it ended with `more`. */
function page(reply: string, r: string): { messages: string[][]; more: boolean } {
  // split on unescaped commas, unescaping, so a text with a comma stays one field
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < reply.length; i++) {
    const ch = reply[i]!;
    if (ch === '\\') {
      cur += reply[++i];
    } else if (ch === ',') {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  expect(parts.slice(0, 2)).toEqual(['history', r]);
  const n = Number(parts[2]);
  const messages = Array.from({ length: n }, (_, i) => parts.slice(3 + 4 * i, 7 + 4 * i));
  const rest = parts.slice(3 + 4 * n);
  expect(rest.length === 0 || (rest.length === 1 && rest[0] === 'more'), `trailing fields ${JSON.stringify(rest)}`).toBe(true);
  return { messages, more: rest.length === 1 };
}

describe('every feature command', () => {
  it('needs a login, and answers syntax for one argument too many', async () => {
    const anon = await fx.open();
    const all = [
      ['join', 'r'],
      ['leave', 'r'],
      ['say', 'r', 't'],
      ['rooms'],
      ['members', 'r'],
      ['history', 'r', 'last', '1'],
      ['friend_request', 'u'],
      ['friend_accept', 'u'],
      ['friend_deny', 'u'],
      ['friend_remove', 'u'],
      ['friends'],
      ['friend_requests'],
      ['presence', 'u'],
      ['typing', 'r', 'start'],
    ];
    for (const f of all) expect(await anon.ask(...f), f[0]).toMatch(err('not_logged_in'));
    const [a] = await fx.users('every');
    const s = await fx.loggedIn(a!);
    for (const f of all) expect(await s.ask(...f, 'extra'), f[0]).toMatch(err('syntax'));
    // info needs no login, and counts its arguments too
    for (const f of [['version'], ['commands'], ['modules']]) expect(await anon.ask(...f, 'extra'), f[0]).toMatch(err('syntax'));
  });
});

describe('rooms', () => {
  it('invalid_room on leave, say, members and history too, not only join', async () => {
    const [a] = await fx.users('inv');
    const s = await fx.loggedIn(a!);
    for (const bad of ['', 'has space', 'x'.repeat(65), 'é', 'a.b', 'a,b']) {
      expect(await s.ask('leave', bad)).toMatch(err('invalid_room'));
      expect(await s.ask('say', bad, 'x')).toMatch(err('invalid_room'));
      expect(await s.ask('members', bad)).toMatch(err('invalid_room'));
      expect(await s.ask('history', bad, 'last', '1')).toMatch(err('invalid_room'));
    }
    // a good name of a room never joined is not_in_room
    expect(await s.ask('leave', 'x'.repeat(64))).toMatch(err('not_in_room'));
  });

  it('a text with commas and backslashes: escaped in the msg push, one field in history', async () => {
    const r = room();
    const [a, b] = await fx.users('txt', 'txtb');
    const sa = await fx.loggedIn(a!);
    const sb = await fx.loggedIn(b!);
    await join(sa, r);
    await join(sb, r);
    await sa.next(); // b joined
    sa.send('say', r, 'a, b\\c,');
    const [pushed, said] = await sa.nextN(2);
    const m = /^said,([^,]+),(\d+),(\d+)$/.exec(said!);
    expect(m?.[1]).toBe(r);
    const [id, time] = [m![2]!, m![3]!];
    expect(Number(id)).toBeGreaterThan(0);
    expect(pushed).toBe(`room,${r},msg,${id},${time},${a},a\\, b\\\\c\\,`);
    expect(await sb.next()).toBe(pushed);
    // read from another connection right after said: the write is visible
    expect(page(await sb.ask('history', r, 'last', '1'), r)).toEqual({ messages: [[id, time, a, 'a, b\\c,']], more: false });
  });

  it('members and rooms drop a room after leave; the room stays for the others', async () => {
    const r = room();
    const [a, b] = await fx.users('ml', 'mlb');
    const sa = await fx.loggedIn(a!);
    const sb = await fx.loggedIn(b!);
    await join(sa, r);
    await join(sb, r);
    expect(await sa.next()).toBe(`room,${r},joined,${b}`);
    sb.send('leave', r);
    expect(await sb.nextN(2)).toEqual([`room,${r},left,${b}`, 'ok']);
    expect(await sa.next()).toBe(`room,${r},left,${b}`);
    expect(await sa.ask('members', r)).toBe(`members,${r},${a}`);
    expect(await sb.ask('rooms')).toBe('rooms');
    expect(await sb.ask('members', r)).toMatch(err('not_in_room'));
    expect(await sb.ask('say', r, 'x')).toMatch(err('not_in_room'));
    // a non-member hears nothing of the room
    sa.send('say', r, 'after');
    await sa.nextN(2);
    await expectNoMoreFrames(sb);
  });

  it('history before and between bound n and numbers like last does', async () => {
    const r = room();
    const [a] = await fx.users('hb');
    const s = await fx.loggedIn(a!);
    await join(s, r);
    for (const bad of [
      ['before', '5', '501'],
      ['before', '-1', '5'],
      ['before', 'x', '5'],
      ['before', '5', '-1'],
      ['before', '5', '5', '5'],
      ['between', '-1', '5'],
      ['between', '1', '-5'],
      ['between', '1', '2', '3'],
      ['since'],
      ['since', 'x'],
      ['after'],
      ['after', 'x'],
      ['after', '1', '2'],
      ['since', '1', '2'],
    ]) {
      expect(await s.ask('history', r, ...bad), JSON.stringify(bad)).toMatch(err('syntax'));
    }
    expect(await s.ask('history', r, 'before', '5', '500')).toBe(`history,${r},0`);
    // numbers past any id or time are numbers: an empty page (the message below is older than all of them)
    s.send('say', r, 'one');
    await s.nextN(2);
    for (const big of ['999999999999999', '9999999999999999', '99999999999999999999']) {
      expect(await s.ask('history', r, 'after', big), big).toBe(`history,${r},0`);
      expect(await s.ask('history', r, 'since', big), big).toBe(`history,${r},0`);
      expect(await s.ask('history', r, 'between', big, big), big).toBe(`history,${r},0`);
      expect((await s.ask('history', r, 'before', big, '1')).split(',').slice(0, 3), big).toEqual(['history', r, '1']);
    }
    expect((await s.ask('history', r, 'last', '0000000000000001')).split(',').slice(0, 3)).toEqual(['history', r, '1']);
    expect(await s.ask('history', r, 'between', '10', '5')).toBe(`history,${r},0`);
  });
});

describe('rooms: the byte bound on every history mode (README: a page that stops early ends with more)', () => {
  it('since and between keep the oldest end, before the newest, each with more', async () => {
    const own = await startServer(['--history-max-bytes', '3000'], tempDir());
    const opened: RawConnection[] = [];
    try {
      const [a] = await freshUsers(own.port, 'hm');
      const s = await loggedIn(own.port, a!, opened);
      const r = room();
      await join(s, r);
      const ids: string[] = [];
      const times: string[] = [];
      for (let i = 1; i <= 5; i++) {
        s.send('say', r, `${i}${'x'.repeat(999)}`);
        const f = (await s.nextN(2))[1]!.split(',');
        ids.push(f[2]!);
        times.push(f[3]!);
      }
      const firsts = async (...q: string[]) => {
        const p = page(await s.ask('history', r, ...q), r);
        return { texts: p.messages.map((m) => m[3]![0]), more: p.more };
      };
      expect(await firsts('since', '0')).toEqual({ texts: ['1', '2'], more: true });
      expect(await firsts('between', '0', String(Number(times[4]) + 1))).toEqual({ texts: ['1', '2'], more: true });
      expect(await firsts('before', ids[4]!, '4')).toEqual({ texts: ['3', '4'], more: true });
      // a page that fits has no more, whatever the mode
      expect(await firsts('before', ids[2]!, '1')).toEqual({ texts: ['2'], more: false });
      expect(await firsts('after', ids[2]!)).toEqual({ texts: ['4', '5'], more: false });
    } finally {
      for (const c of opened) c.close();
      await own.stop();
      removeDir(own.data);
    }
  });
});

describe('typing', () => {
  it('a repeated start within the timeout pushes nothing and renews the timer', async () => {
    const r = room();
    const [a, b] = await fx.users('tr', 'trb');
    const sa = await fx.loggedIn(a!);
    const sb = await fx.loggedIn(b!);
    await join(sa, r);
    await join(sb, r);
    await sa.next();
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      expect(await sa.ask('typing', r, 'start')).toBe('ok');
      expect(await sb.next()).toBe(`room,${r},typing,${a},start`);
      vi.advanceTimersByTime(6000);
      expect(await sa.ask('typing', r, 'start')).toBe('ok');
      await expectNoMoreFrames(sb); // renewed, not pushed again
      vi.advanceTimersByTime(6000); // 12 s after the first start, 6 s after the renewal
      await expectNoMoreFrames(sb);
      vi.advanceTimersByTime(4000); // 10 s after the renewal
      expect(await sb.next()).toBe(`room,${r},typing,${a},stop`);
    } finally {
      vi.useRealTimers();
    }
  });

  it('closing one of two connections does not end the typing; closing the last one does', async () => {
    const r = room();
    const [a, b] = await fx.users('tl', 'tlb');
    const sa1 = await fx.loggedIn(a!);
    const sa2 = await fx.loggedIn(a!);
    const sb = await fx.loggedIn(b!);
    await join(sa1, r);
    await sa2.next();
    await join(sb, r);
    await sa1.next();
    await sa2.next();
    expect(await sa1.ask('typing', r, 'start')).toBe('ok');
    expect(await sb.next()).toBe(`room,${r},typing,${a},start`);
    sa1.close();
    await sa1.closedPromise;
    // witness: the server has let go of the closed connection (a close has no reply to wait for)
    const id = (await fx.srv.server.core.users.find(a!))!.id;
    await eventually(() => expect(fx.srv.server.core.hub.sessionsOf(id)).toHaveLength(1));
    await expectNoMoreFrames(sb);
    sa2.close();
    expect(await sb.nextN(2)).toEqual([`room,${r},typing,${a},stop`, `presence,${a},offline`]);
  });
});

describe('typing and leave (MODULES.md is silent; README: leaving ends typing)', () => {
  it('a member who leaves while typing: the others get the stop at once, before the left, and nothing about the room after it', async () => {
    const r = room();
    const [a, b] = await fx.users('tv', 'tvb');
    const sa = await fx.loggedIn(a!);
    const sb = await fx.loggedIn(b!);
    await join(sa, r);
    await join(sb, r);
    await sa.next();
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      expect(await sa.ask('typing', r, 'start')).toBe('ok');
      expect(await sb.next()).toBe(`room,${r},typing,${a},start`);
      sa.send('leave', r);
      expect(await sa.nextN(2)).toEqual([`room,${r},left,${a}`, 'ok']);
      // before: only the left came now, and the timer pushed a stop about a room its typist had left
      expect(await sb.nextN(2)).toEqual([`room,${r},typing,${a},stop`, `room,${r},left,${a}`]);
      vi.advanceTimersByTime(11_000);
      await expectNoMoreFrames(sb);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('user lists (MODULES.md: sorted; README: case-insensitively, as names are matched)', () => {
  it('members and friends list alice, Bob, carl, Dan in that order, not in code-unit order', async () => {
    const r = room();
    const [me, ...others] = await fx.users('srtme', 'Dsrt', 'asrt', 'Csrt', 'bsrt');
    const conns = [await fx.loggedIn(me!)];
    await join(conns[0]!, r);
    for (const o of others) {
      const c = await fx.loggedIn(o!);
      conns.push(c);
      await join(c, r);
      expect(await c.ask('friend_request', me!)).toBe('ok');
      conns[0]!.send('friend_accept', o!);
      await c.next(); // friend,added
    }
    const expected = [me!, ...others].sort((x, y) => (x.toLowerCase() < y.toLowerCase() ? -1 : 1));
    expect(expected.map((n) => n[0])).toEqual(['a', 'b', 'C', 'D', 's']);
    expect(await conns[4]!.ask('members', r)).toBe(`members,${r},${expected.join(',')}`);
    expect(await conns[4]!.ask('friends')).toBe(`friends,${me}`);
    const friends = conns[0]!;
    // the joins, requests and added pushes before: skip to the reply
    friends.send('req', 'fr', 'friends');
    let reply = await friends.next();
    while (!reply.startsWith('req,fr,')) reply = await friends.next();
    expect(reply).toBe(`req,fr,friends,${expected.filter((n) => n !== me).join(',')}`);
  });
});

describe('names as registered', () => {
  it('room and friend pushes spell the actor as registered, whatever case they logged in or were named with', async () => {
    const r = room();
    const [a, b] = await fx.users('CamelA', 'CamelB');
    const sa = await fx.loggedIn(a!.toLowerCase());
    const sb = await fx.loggedIn(b!.toUpperCase());
    sa.send('join', r);
    expect(await sa.nextN(2)).toEqual([`room,${r},joined,${a}`, 'ok']);
    expect(await sa.ask('friend_request', b!.toLowerCase())).toBe('ok');
    expect(await sb.next()).toBe(`friend,request,${a}`);
    expect(await sb.ask('friend_requests')).toBe(`friend_requests,${a}`);
    sb.send('friend_accept', a!.toUpperCase());
    expect(await sb.nextN(2)).toEqual([`friend,added,${a}`, 'ok']);
    expect(await sa.next()).toBe(`friend,added,${b}`);
    expect(await sa.ask('presence', b!.toLowerCase())).toBe(`presence,${b},online`);
  });
});

describe('info', () => {
  it('commands lists every command of the six core modules and of the features, and each answers', async () => {
    const c = await fx.open();
    const names = (await c.ask('commands')).split(',').slice(1);
    for (const name of ['nop', 'req', 'register', 'login', 'whoami', 'send', 'sync', 'resume', 'once', 'join', 'leave', 'say', 'rooms', 'members', 'history']) {
      expect(names).toContain(name);
    }
    for (const name of [
      'friend_request',
      'friend_accept',
      'friend_deny',
      'friend_remove',
      'friends',
      'friend_requests',
      'presence',
      'typing',
      'version',
      'commands',
      'modules',
    ]) {
      expect(names).toContain(name);
    }
    // nothing listed is command_not_found
    for (const name of names) expect(await c.ask(name), name).not.toMatch(err('command_not_found'));
  });
});

describe('presence', () => {
  async function befriend(a: string, sa: RawConnection, b: string, sb: RawConnection): Promise<void> {
    expect(await sa.ask('friend_request', b)).toBe('ok');
    expect(await sb.next()).toBe(`friend,request,${a}`);
    sb.send('friend_accept', a);
    expect(await sb.nextN(2)).toEqual([`friend,added,${a}`, 'ok']);
    expect(await sa.next()).toBe(`friend,added,${b}`);
  }

  it('a friend who shares two rooms too hears each change once, not once per tie', async () => {
    const [a, b] = await fx.users('pt', 'ptb');
    const sa = await fx.loggedIn(a!);
    const sb = await fx.loggedIn(b!);
    await befriend(a!, sa, b!, sb);
    for (const r of [room(), room()]) {
      await join(sa, r);
      await join(sb, r);
      expect(await sa.next()).toBe(`room,${r},joined,${b}`);
    }
    sa.close();
    expect(await sb.next()).toBe(`presence,${a},offline`);
    const again = await fx.loggedIn(a!);
    expect(await sb.next()).toBe(`presence,${a},online`);
    await expectNoMoreFrames(sb);
    await expectNoMoreFrames(again); // no presence push about oneself
  });

  it("a connection that logs in as someone else ends the first user's presence when it was their last", async () => {
    const [a, b, watcher] = await fx.users('ps', 'psb', 'psw');
    const sw = await fx.loggedIn(watcher!);
    const sa = await fx.loggedIn(a!);
    await befriend(a!, sa, watcher!, sw);
    const sb = await fx.loggedIn(b!);
    await befriend(b!, sb, watcher!, sw);
    sb.close();
    expect(await sw.next()).toBe(`presence,${b},offline`);
    // the one connection of a becomes b: a goes offline, b comes online
    expect(await sa.ask('login', b!, PW)).toBe('ok');
    expect(new Set(await sw.nextN(2))).toEqual(new Set([`presence,${a},offline`, `presence,${b},online`]));
    expect((await sw.ask('presence', a!)).split(',').slice(0, 3)).toEqual(['presence', a, 'offline']);
  });
});

describe('times and offline friend answers', () => {
  it('said times are milliseconds since the Unix epoch, taken while the say ran', async () => {
    const r = room();
    const [a] = await fx.users('tm');
    const s = await fx.loggedIn(a!);
    await join(s, r);
    const before = Date.now();
    s.send('say', r, 'now');
    const said = (await s.nextN(2))[1]!.split(',');
    const after = Date.now();
    expect(Number(said[3])).toBeGreaterThanOrEqual(before);
    expect(Number(said[3])).toBeLessThanOrEqual(after);
    expect(await s.ask('history', r, 'since', said[3]!)).toMatch(new RegExp(`^history,${r},1,${said[2]},${said[3]},`));
    expect(await s.ask('history', r, 'since', String(Number(said[3]) + 1))).toBe(`history,${r},0`);
  });

  it('friend added and denied reach an offline asker at their next login', async () => {
    const [a, b, c] = await fx.users('fo', 'fob', 'foc');
    const sa = await fx.loggedIn(a!);
    expect(await sa.ask('friend_request', b!)).toBe('ok');
    expect(await sa.ask('friend_request', c!)).toBe('ok');
    sa.close();
    await sa.closedPromise;
    const sb = await fx.open();
    sb.send('login', b!, PW);
    expect(await sb.nextN(2)).toEqual(['ok', `friend,request,${a}`]);
    sb.send('friend_accept', a!);
    expect(await sb.nextN(2)).toEqual([`friend,added,${a}`, 'ok']);
    const sc = await fx.open();
    sc.send('login', c!, PW);
    expect(await sc.nextN(2)).toEqual(['ok', `friend,request,${a}`]);
    expect(await sc.ask('friend_deny', a!)).toBe('ok');
    const back = await fx.open();
    back.send('login', a!, PW);
    expect(await back.nextN(3)).toEqual(['ok', `friend,added,${b}`, `friend,denied,${c}`]);
  });
});
