/** MODULES.md rooms: every row and push rule, several users with several connections. */
import { describe, expect, it } from 'vitest';
import { startServer, removeDir, tempDir } from '../helpers/server.ts';
import { eventually } from '../helpers/eventually.ts';
import { errorOf as err, expectNoMoreFrames, freshUsers, loggedIn as login, serverFixture } from '../helpers/users.ts';

const fx = serverFixture();
const loggedIn = (u: string) => fx.loggedIn(u);
const users = (...p: string[]) => fx.users(...p);
let roomNo = 0;
const room = () => `room-${++roomNo}`;

describe('rooms: membership', () => {
  it('needs a login and the right number of arguments', async () => {
    const c = await fx.open();
    for (const req of [['join', 'r'], ['leave', 'r'], ['say', 'r', 'x'], ['rooms'], ['members', 'r'], ['history', 'r', 'last', '5']]) {
      expect(await c.ask(...req)).toMatch(err('not_logged_in'));
    }
    const [a] = await users('a');
    const s = await loggedIn(a!);
    for (const req of [['join'], ['join', 'r', 'x'], ['leave'], ['say', 'r'], ['say', 'r', 'a', 'b'], ['rooms', 'x'], ['members'], ['history', 'r']]) {
      expect(await s.ask(...req)).toMatch(err('syntax'));
    }
  });

  it('checks room names', async () => {
    const [a] = await users('a');
    const s = await loggedIn(a!);
    for (const bad of ['', 'has space', 'x'.repeat(65), 'é', 'a.b']) expect(await s.ask('join', bad)).toMatch(err('invalid_room'));
    s.send('join', 'x'.repeat(64));
    expect(await s.nextN(2)).toEqual([`room,${'x'.repeat(64)},joined,${a}`, 'ok']);
    s.send('join', 'A-z_09');
    expect((await s.nextN(2))[1]).toBe('ok');
  });

  it('join pushes joined to every connection of every member, the joiner first, then ok; a repeat join is silent', async () => {
    const r = room();
    const [a, b] = await users('a', 'b');
    const a1 = await loggedIn(a!);
    const a2 = await loggedIn(a!);
    const b1 = await loggedIn(b!);
    a1.send('join', r);
    expect(await a1.nextN(2)).toEqual([`room,${r},joined,${a}`, 'ok']);
    expect(await a2.next()).toBe(`room,${r},joined,${a}`);
    b1.send('join', r);
    expect(await b1.nextN(2)).toEqual([`room,${r},joined,${b}`, 'ok']);
    expect(await a1.next()).toBe(`room,${r},joined,${b}`);
    expect(await a2.next()).toBe(`room,${r},joined,${b}`);
    expect(await b1.ask('join', r)).toBe('ok');
    await expectNoMoreFrames(a1);
  });

  it('rooms and members list sorted; members needs membership', async () => {
    const [a, b, c] = await users('zed', 'amy', 'mid');
    const ra = `b-${room()}`;
    const rb = `a-${room()}`;
    const sa = await loggedIn(a!);
    const sb = await loggedIn(b!);
    const sc = await loggedIn(c!);
    expect(await sa.ask('rooms')).toBe('rooms');
    for (const s of [sa, sb]) {
      s.send('join', ra);
    }
    await sa.nextN(3);
    await sb.nextN(2);
    expect(await sa.ask('join', rb)).toMatch(/joined/);
    await sa.next();
    expect(await sa.ask('rooms')).toBe(`rooms,${rb},${ra}`);
    expect(await sa.ask('members', ra)).toBe(`members,${ra},${[a, b].sort().join(',')}`);
    expect(await sc.ask('members', ra)).toMatch(err('not_in_room'));
  });

  it('compares room names case-sensitively: Room and room are two rooms', async () => {
    const [a] = await users('case');
    const s = await loggedIn(a!);
    const r = room();
    const upper = r.toUpperCase();
    s.send('join', r);
    await s.nextN(2);
    expect(await s.ask('say', upper, 'x')).toMatch(err('not_in_room'));
    s.send('join', upper);
    expect(await s.nextN(2)).toEqual([`room,${upper},joined,${a}`, 'ok']);
    expect(await s.ask('rooms')).toBe(`rooms,${[r, upper].sort().join(',')}`);
  });

  it('leave pushes left to the members and to the leaver; leaving twice is not_in_room', async () => {
    const r = room();
    const [a, b] = await users('a', 'b');
    const a1 = await loggedIn(a!);
    const a2 = await loggedIn(a!);
    const b1 = await loggedIn(b!);
    a1.send('join', r);
    await a1.nextN(2);
    await a2.next();
    b1.send('join', r);
    await b1.nextN(2);
    await a1.next();
    await a2.next();
    a1.send('leave', r);
    expect(await a1.nextN(2)).toEqual([`room,${r},left,${a}`, 'ok']);
    expect(await a2.next()).toBe(`room,${r},left,${a}`);
    expect(await b1.next()).toBe(`room,${r},left,${a}`);
    expect(await a1.ask('leave', r)).toMatch(err('not_in_room'));
    expect(await a1.ask('rooms')).toBe('rooms');
    expect(await b1.ask('members', r)).toBe(`members,${r},${b}`);
  });

  it('membership lasts across reconnects and restarts; the room and its history stay when empty', async () => {
    const own = await startServer([], tempDir());
    try {
      const [u] = await freshUsers(own.port, 'keep');
      const s = await login(own.port, u!);
      s.send('join', 'lasting');
      await s.nextN(2);
      s.send('say', 'lasting', 'before restart');
      const said = (await s.nextN(2))[1]!;
      expect(said).toMatch(/^said,lasting,\d+,\d+$/);
      const firstId = Number(said.split(',')[2]);
      s.close();
      await own.stop();
      const again = await startServer([], own.data);
      try {
        const t = await login(again.port, u!);
        expect(await t.ask('rooms')).toBe('rooms,lasting');
        expect(await t.ask('history', 'lasting', 'last', '5')).toMatch(new RegExp(`^history,lasting,1,\\d+,\\d+,${u},before restart$`));
        t.send('leave', 'lasting');
        await t.nextN(2);
        t.send('join', 'lasting');
        await t.nextN(2);
        expect(await t.ask('history', 'lasting', 'last', '5')).toMatch(/,before restart$/);
        t.send('say', 'lasting', 'after restart');
        const next = Number((await t.nextN(2))[1]!.split(',')[2]);
        expect(next).toBeGreaterThan(firstId); // ids keep increasing across restarts, never reused
        t.close();
      } finally {
        await again.stop();
      }
    } finally {
      removeDir(own.data);
    }
  });
});

describe('rooms: say and history', () => {
  it('say stores, pushes msg to every member connection (the sayer first) and answers said', async () => {
    const r = room();
    const [a, b, outsider] = await users('a', 'b', 'out');
    const a1 = await loggedIn(a!);
    const b1 = await loggedIn(b!);
    const b2 = await loggedIn(b!);
    const o = await loggedIn(outsider!);
    for (const [s, n] of [
      [a1, 2],
      [b1, 2],
    ] as const) {
      s.send('join', r);
      await s.nextN(n);
    }
    await a1.next();
    await b2.next();
    expect(await o.ask('say', r, 'hi')).toMatch(err('not_in_room'));
    const before = Date.now();
    a1.send('say', r, 'hello, all\\');
    const [pushed, said] = await a1.nextN(2);
    const m = /^room,([^,]+),msg,(\d+),(\d+),([^,]+),hello\\, all\\\\$/.exec(pushed!);
    expect(m).not.toBeNull();
    const [, rr, id, time, who] = m!;
    expect([rr, who]).toEqual([r, a]);
    expect(Number(time)).toBeGreaterThanOrEqual(before - 1);
    expect(said).toBe(`said,${r},${id},${time}`);
    expect(await b1.next()).toBe(pushed);
    expect(await b2.next()).toBe(pushed);
    await expectNoMoreFrames(o);
  });

  it('a message holding U+0000 and U+E000 comes back exactly, pushed and from history', async () => {
    const r = room();
    const [a] = await users('nul');
    const s = await loggedIn(a!);
    s.send('join', r);
    await s.nextN(2);
    const texts = ['a\u0000b', '\uE000', '\uE0000', 'x\uE000\uE000\u0000y'];
    // pipelined: on PostgreSQL they go in one statement, their texts as one array
    for (const t of texts) s.send('say', r, t);
    const frames = await s.nextN(2 * texts.length);
    const pushed = frames.filter((f) => f.startsWith('room,'));
    expect(pushed.map((f) => f.split(',').slice(6).join(','))).toEqual(texts);
    const history = (await s.ask('history', r, 'last', '10')).split(',');
    expect(texts.map((t) => history.includes(t))).toEqual(texts.map(() => true));
  });

  it('ids increase; history modes return oldest first with the right windows', async () => {
    const r = room();
    const [a] = await users('a');
    const s = await loggedIn(a!);
    s.send('join', r);
    await s.nextN(2);
    const msgs: { id: number; time: number }[] = [];
    for (let i = 1; i <= 8; i++) {
      s.send('say', r, `m${i}`);
      const said = (await s.nextN(2))[1]!.split(',');
      msgs.push({ id: Number(said[2]), time: Number(said[3]) });
      // the second half is said in a later millisecond than the first, for the time windows below
      if (i === 4) await eventually(() => expect(Date.now()).toBeGreaterThan(msgs[3]!.time));
    }
    for (let i = 1; i < msgs.length; i++) expect(msgs[i]!.id).toBeGreaterThan(msgs[i - 1]!.id);
    const texts = (reply: string) => {
      const f = reply.split(',');
      expect(f.slice(0, 2)).toEqual(['history', r]);
      const n = Number(f[2]);
      expect(f.length).toBe(3 + 4 * n);
      return Array.from({ length: n }, (_, i) => f[3 + 4 * i + 3]);
    };
    expect(texts(await s.ask('history', r, 'last', '3'))).toEqual(['m6', 'm7', 'm8']);
    expect(texts(await s.ask('history', r, 'last', '500'))).toEqual(['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8']);
    expect(texts(await s.ask('history', r, 'after', String(msgs[5]!.id)))).toEqual(['m7', 'm8']);
    expect(texts(await s.ask('history', r, 'after', '0'))).toHaveLength(8);
    expect(texts(await s.ask('history', r, 'before', String(msgs[4]!.id), '2'))).toEqual(['m3', 'm4']);
    expect(texts(await s.ask('history', r, 'since', String(msgs[4]!.time)))).toEqual(['m5', 'm6', 'm7', 'm8']);
    expect(texts(await s.ask('history', r, 'between', String(msgs[0]!.time), String(msgs[4]!.time)))).toEqual(['m1', 'm2', 'm3', 'm4']);
    expect(texts(await s.ask('history', r, 'since', String(Date.now() + 100000)))).toEqual([]);
    const full = (await s.ask('history', r, 'last', '1')).split(',');
    expect(full).toEqual(['history', r, '1', String(msgs[7]!.id), String(msgs[7]!.time), a, 'm8']);
  });

  // since and between find their first id by time in the id index (a binary search): every boundary, another room's ids in between
  // hundreds of history requests, each with binary searches (9 s on PostgreSQL in a full run at twice the size): a timeout of its own
  it("since and between return exactly the messages of their time window, at every boundary, with two rooms' ids interleaved", { timeout: 60_000 }, async () => {
    const [r1, r2] = [room(), room()];
    const [a, b] = await users('a', 'b');
    const talkers = [await loggedIn(a!), await loggedIn(b!)];
    for (const c of talkers) {
      for (const r of [r1, r2]) {
        c.send('join', r);
        await eventually(async () => expect(await c.ask('members', r)).toContain(c === talkers[0] ? a! : b!));
      }
    }
    for (let burst = 0; burst < 3; burst++) {
      // two connections pipelining into both rooms at once: each room's ids have gaps
      for (const [n, c] of talkers.entries()) for (let i = 0; i < 6; i++) c.send('say', i % 2 === 0 ? r1 : r2, `b${burst}c${n}m${i}`);
      for (const c of talkers) {
        let said = 0;
        while (said < 6) if ((await c.next()).startsWith('said,')) said++;
      }
      const now = Date.now();
      await eventually(() => expect(Date.now()).toBeGreaterThan(now));
    }
    // a connection of its own for the reads: the talkers still hold each other's pushes
    const s = await loggedIn(a!);
    // hundreds of reads: past the per-user request rate, so a refused one is asked again when the limit says
    const ask = async (...req: string[]): Promise<string> => {
      for (;;) {
        const reply = await s.ask(...req);
        const wait = /^error,nonfatal,rate_limited,.* (\d+) ms$/.exec(reply);
        if (wait === null) return reply;
        await new Promise((resolve) => setTimeout(resolve, Number(wait[1])));
      }
    };
    const messages = (reply: string) => {
      const f = reply.split(',');
      return Array.from({ length: Number(f[2]) }, (_, i) => ({ time: Number(f[3 + 4 * i + 1]), text: f[3 + 4 * i + 3]! }));
    };
    const texts = (reply: string) => messages(reply).map((m) => m.text);
    for (const r of [r1, r2]) {
      const all = messages(await ask('history', r, 'last', '500'));
      expect(all).toHaveLength(18);
      const times = [...new Set(all.map((m) => m.time))];
      const probes = [0, ...times.flatMap((t) => [t - 1, t, t + 1])];
      for (const t of probes) {
        const want = all.filter((m) => m.time >= t).map((m) => m.text);
        expect(texts(await ask('history', r, 'since', String(t))), `since ${t}`).toEqual(want);
        for (const u of probes.filter((u, i) => u > t && i % 6 === 0)) {
          const window = all.filter((m) => m.time >= t && m.time < u).map((m) => m.text);
          expect(texts(await ask('history', r, 'between', String(t), String(u))), `between ${t} ${u}`).toEqual(window);
        }
      }
    }
  });

  it('history answers syntax for bad modes and numbers, not_in_room for non-members', async () => {
    const r = room();
    const [a, b] = await users('a', 'b');
    const s = await loggedIn(a!);
    const o = await loggedIn(b!);
    s.send('join', r);
    await s.nextN(2);
    for (const bad of [
      ['last'],
      ['last', '0'],
      ['last', '501'],
      ['last', '-1'],
      ['last', 'x'],
      ['last', '5', '6'],
      ['since', '-5'],
      ['after', '1.5'],
      ['before', '5'],
      ['before', '5', '0'],
      ['between', '1'],
      ['between', 'a', 'b'],
      ['newest', '5'],
    ]) {
      expect(await s.ask('history', r, ...bad)).toMatch(err('syntax'));
    }
    expect(await o.ask('history', r, 'last', '5')).toMatch(err('not_in_room'));
  });

  it('pages at 500: since/after/between return the oldest 500, last/before the newest', async () => {
    const r = room();
    const [a] = await users('a');
    const s = await loggedIn(a!);
    s.send('join', r);
    await s.nextN(2);
    const frames = [];
    for (let i = 1; i <= 502; i++) frames.push(['say', r, `m${i}`]);
    for (const f of frames) s.send(...f);
    const replies = await s.nextN(502 * 2, 20_000);
    const firstId = Number(replies[1]!.split(',')[2]);
    const counts = async (...q: string[]) => {
      const f = (await s.ask('history', r, ...q)).split(',');
      return [Number(f[2]), f[6], f[f.length - 1]];
    };
    expect(await counts('after', '0')).toEqual([500, 'm1', 'm500']);
    expect(await counts('since', '0')).toEqual([500, 'm1', 'm500']);
    expect(await counts('between', '0', String(Date.now() + 1000))).toEqual([500, 'm1', 'm500']);
    expect(await counts('last', '500')).toEqual([500, 'm3', 'm502']);
    expect(await counts('before', String(firstId + 501), '500')).toEqual([500, 'm2', 'm501']);
    expect(await counts('after', String(firstId + 499))).toEqual([2, 'm501', 'm502']);
  });
});

describe('rooms: history pages bounded in bytes', () => {
  it('stops a page at --history-max-bytes, keeps the end nearest the query, and ends it with more', async () => {
    const own = await startServer(['--history-max-bytes', '3000'], tempDir());
    try {
      const [a] = await freshUsers(own.port, 'hb');
      const s = await login(own.port, a!);
      const r = room();
      s.send('join', r);
      await s.nextN(2);
      for (let i = 1; i <= 5; i++) {
        s.send('say', r, `${i}${'x'.repeat(999)}`);
        await s.nextN(2);
      }
      const page = async (...q: string[]) => {
        const f = (await s.ask('history', r, ...q)).split(',');
        const count = Number(f[2]);
        return { texts: Array.from({ length: count }, (_, i) => f[3 + 4 * i + 3]![0]), more: f.length === 3 + 4 * count + 1 && f.at(-1) === 'more' };
      };
      // about 1 KB a message: two fit in 3000 bytes (with each message's overhead), a third does not
      expect(await page('last', '5')).toEqual({ texts: ['4', '5'], more: true });
      expect(await page('after', '0')).toEqual({ texts: ['1', '2'], more: true });
      expect(await page('last', '2')).toEqual({ texts: ['4', '5'], more: false });
      s.close();
    } finally {
      await own.stop();
      removeDir(own.data);
    }
  });
});

describe('rooms: memberships per user bounded', () => {
  it('answers too_many_rooms past --max-rooms-per-user, over TCP and HTTP; a leave makes room again', async () => {
    const own = await startServer(['--max-rooms-per-user', '3', '--http-port', '0'], tempDir());
    try {
      const [a] = await freshUsers(own.port, 'mr');
      const s = await login(own.port, a!);
      const rs = [room(), room(), room(), room()];
      for (const r of rs.slice(0, 3)) {
        s.send('join', r);
        expect(await s.nextN(2)).toEqual([`room,${r},joined,${a}`, 'ok']);
      }
      expect(await s.ask('join', rs[3]!)).toMatch(err('too_many_rooms'));
      // already a member: still ok, nothing new
      expect(await s.ask('join', rs[0]!)).toBe('ok');
      const base = `http://127.0.0.1:${own.server.httpPort}`;
      const login1 = await fetch(`${base}/api/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: a, password: 'password1' }),
      });
      const { token } = (await login1.json()) as { token: string };
      const viaHttp = await fetch(`${base}/api/rooms/${rs[3]}/join`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
      expect(viaHttp.status).toBe(409);
      expect(((await viaHttp.json()) as { error: string }).error).toBe('too_many_rooms');
      expect(await s.ask('rooms')).toBe(`rooms,${rs.slice(0, 3).sort().join(',')}`);
      s.send('leave', rs[1]!);
      expect(await s.nextN(2)).toEqual([`room,${rs[1]},left,${a}`, 'ok']);
      s.send('join', rs[3]!);
      expect(await s.nextN(2)).toEqual([`room,${rs[3]},joined,${a}`, 'ok']);
      s.close();
    } finally {
      await own.stop();
      removeDir(own.data);
    }
  });
});
