/**
 * Rooms under concurrency: many connections saying, joining and leaving at
 * once must still give every client one consistent order per room.
 */
import { describe, expect, it } from 'vitest';
import type { RawConnection } from '../helpers/raw.ts';
import { errorOf as err, expectNoMoreFrames, serverFixture } from '../helpers/users.ts';

const fx = serverFixture();
let roomNo = 0;
const room = () => `race-${++roomNo}`;

/** Joins every connection to the room and reads the joins they were pushed. */
async function joinAll(r: string, conns: RawConnection[]): Promise<void> {
  for (let i = 0; i < conns.length; i++) {
    conns[i]!.send('join', r);
    await conns[i]!.nextN(2); // its own joined, then ok
    for (const earlier of conns.slice(0, i)) await earlier.next();
  }
}

describe('rooms: concurrent say', () => {
  it('pushes every message in id order, and history after any id seen never misses a message pushed later', async () => {
    const SAYERS = 12;
    const EACH = 15;
    const r = room();
    const names = await fx.users(...Array.from({ length: SAYERS + 2 }, (_, i) => `s${i}_`));
    const conns = await Promise.all(names.map((n) => fx.loggedIn(n)));
    await joinAll(r, conns);
    const watcher = conns[SAYERS]!;
    const poller = conns[SAYERS + 1]!;
    const sayers = conns.slice(0, SAYERS);
    const total = SAYERS * EACH;

    // each connection pipelines its says (they run one at a time per connection, concurrently across them)
    for (const [i, s] of sayers.entries()) for (let k = 0; k < EACH; k++) s.send('say', r, `m${i}-${k}`);

    // meanwhile a client pages with history after the last id it has, as a reconnecting client does
    const polled: number[] = [];
    let pushedSeen = 0;
    const polling = (async () => {
      let last = 0;
      while (polled.length < total) {
        poller.send('history', r, 'after', String(last));
        let reply = await poller.next();
        while (reply.startsWith('room,')) {
          pushedSeen++;
          reply = await poller.next();
        }
        const f = reply.split(',');
        const n = Number(f[2]);
        for (let j = 0; j < n; j++) {
          const id = Number(f[3 + j * 4]);
          expect(id).toBeGreaterThan(last);
          polled.push(id);
          last = id;
        }
        // nothing new yet: the next page waits for the next push to this client, not a timer
        if (n === 0) {
          if (pushedSeen >= total) break; // everything was pushed, and history still lacks some: missed
          await poller.next();
          pushedSeen++;
        }
      }
    })();
    polling.catch(() => {}); // awaited below; a failure here must not surface as unhandled first

    const pushed = (await watcher.nextN(total, 20_000)).map((f) => Number(f.split(',')[3]));
    expect(pushed).toEqual([...pushed].sort((a, b) => a - b));
    expect(new Set(pushed).size).toBe(total);
    await polling;
    // a message that committed after a higher id was already readable would be missing here
    expect(polled).toEqual(pushed);
  });
});

describe('rooms: says into many rooms at once', () => {
  // on PostgreSQL one turn's appends to many rooms share a transaction that locks them all
  it('every room keeps its own order: said ids ascend per room, and history holds exactly what was acknowledged', async () => {
    const USERS = 10;
    const EACH = 6;
    const shared = room();
    const names = await fx.users(...Array.from({ length: USERS }, (_, i) => `m${i}_`));
    const conns = await Promise.all(names.map((n) => fx.loggedIn(n)));
    await joinAll(shared, conns);
    const own = conns.map(() => room());
    for (const [i, c] of conns.entries()) {
      c.send('join', own[i]!);
      await c.nextN(2);
    }
    // each connection pipelines says into its own room and the shared one, interleaved
    for (const [i, c] of conns.entries())
      for (let k = 0; k < EACH; k++) {
        c.send('say', own[i]!, `own${i}-${k}`);
        c.send('say', shared, `sh${i}-${k}`);
      }
    const said = new Map<string, { id: number; text: string }[]>();
    await Promise.all(
      conns.map(async (c, i) => {
        let replies = 0;
        while (replies < 2 * EACH) {
          const f = (await c.next(20_000)).split(',');
          if (f[0] === 'room') continue; // pushes of the rooms, in whatever order they interleave with replies
          expect(f[0]).toBe('said');
          const r = f[1]!;
          const k = r === shared ? replies >> 1 : replies >> 1;
          const text = r === shared ? `sh${i}-${k}` : `own${i}-${k}`;
          said.set(r, [...(said.get(r) ?? []), { id: Number(f[2]), text }]);
          replies++;
        }
      }),
    );
    const reader = conns[0]!;
    for (const r of [shared, own[0]!]) {
      const mine = said.get(r)!.sort((a, b) => a.id - b.id);
      reader.send('history', r, 'last', String(mine.length + 5));
      let reply = await reader.next();
      while (reply.startsWith('room,')) reply = await reader.next();
      const f = reply.split(',');
      expect(Number(f[2])).toBe(mine.length);
      const stored = Array.from({ length: mine.length }, (_, j) => ({ id: Number(f[3 + j * 4]), text: f[6 + j * 4]! }));
      expect(stored).toEqual(mine);
    }
    // one sender's says into the shared room took ids in the order it sent them
    for (let i = 0; i < USERS; i++) {
      const ids = said.get(shared)!.filter((m) => m.text.startsWith(`sh${i}-`));
      expect(ids.map((m) => m.text)).toEqual(Array.from({ length: EACH }, (_, k) => `sh${i}-${k}`));
    }
  });
});

describe('rooms: concurrent leave', () => {
  it('two connections of one user leaving at once: left pushed once to everyone, one ok and one not_in_room', async () => {
    const ROOMS = 6;
    const [a, b] = await fx.users('leaver', 'stayer');
    const [a1, a2, b1] = [await fx.loggedIn(a!), await fx.loggedIn(a!), await fx.loggedIn(b!)];
    const rooms = Array.from({ length: ROOMS }, room);
    for (const r of rooms) {
      a1.send('join', r);
      expect(await a1.nextN(2)).toEqual([`room,${r},joined,${a}`, 'ok']);
      expect(await a2.next()).toBe(`room,${r},joined,${a}`);
      b1.send('join', r);
      expect(await b1.nextN(2)).toEqual([`room,${r},joined,${b}`, 'ok']);
      expect(await a1.next()).toBe(`room,${r},joined,${b}`);
      expect(await a2.next()).toBe(`room,${r},joined,${b}`);
    }
    for (const r of rooms) {
      a1.send('leave', r);
      a2.send('leave', r);
    }
    const framesUntilReplies = async (c: RawConnection) => {
      const got: string[] = [];
      let replies = 0;
      while (replies < ROOMS) {
        const f = await c.next();
        got.push(f);
        if (!f.startsWith('room,')) replies++;
      }
      return got;
    };
    const [got1, got2] = [await framesUntilReplies(a1), await framesUntilReplies(a2)];
    // every push those leaves made is written before this nop's reply
    for (const [c, got] of [
      [a1, got1],
      [a2, got2],
    ] as const) {
      c.send('nop');
      for (let f = await c.next(); f !== ''; f = await c.next()) got.push(f);
    }
    const toB: string[] = [];
    b1.send('nop');
    for (let f = await b1.next(); f !== ''; f = await b1.next()) toB.push(f);
    for (const r of rooms) {
      const left = `room,${r},left,${a}`;
      expect(got1.filter((f) => f === left)).toHaveLength(1);
      expect(got2.filter((f) => f === left)).toHaveLength(1);
      expect(toB.filter((f) => f === left)).toHaveLength(1);
    }
    const replies = [...got1, ...got2].filter((f) => !f.startsWith('room,'));
    expect(replies.filter((f) => f === 'ok')).toHaveLength(ROOMS);
    expect(replies.filter((f) => err('not_in_room').test(f))).toHaveLength(ROOMS);
    expect(await b1.ask('members', rooms[0]!)).toBe(`members,${rooms[0]},${b}`);
    await expectNoMoreFrames(a1);
  });
});
