/** Friends under concurrency: crossing requests and repeated accepts end in one friendship, each push once. */
import { describe, expect, it } from 'vitest';
import type { RawConnection } from '../helpers/raw.ts';
import { serverFixture } from '../helpers/users.ts';

const fx = serverFixture();
const PAIRS = 8;

/** Every frame the connection got up to the reply of a `nop` sent now (so every earlier push is in). */
async function drain(c: RawConnection): Promise<string[]> {
  c.send('nop');
  const frames: string[] = [];
  for (let f = await c.next(); f !== ''; f = await c.next()) frames.push(f);
  return frames;
}

/** Sends one request on each connection at once; returns each connection's frames up to its reply, and the replies. */
async function atOnce(requests: [RawConnection, ...string[]][]): Promise<{ frames: string[][]; replies: string[] }> {
  for (const [c, ...fields] of requests) c.send(...fields);
  const frames: string[][] = [];
  const replies: string[] = [];
  for (const [c] of requests) {
    const mine: string[] = [];
    let f = await c.next();
    while (f.startsWith('friend,') || f.startsWith('presence,')) {
      mine.push(f);
      f = await c.next();
    }
    frames.push(mine);
    replies.push(f);
  }
  return { frames, replies };
}

describe('friends: concurrent requests', () => {
  it('crossing requests end in one friendship: one request push at most, friend added once on each side, both ok', async () => {
    const names = await fx.users(...Array.from({ length: PAIRS }, (_, i) => [`x${i}a`, `x${i}b`]).flat());
    const conns = await Promise.all(names.map((n) => fx.loggedIn(n)));
    const pairs = Array.from({ length: PAIRS }, (_, i) => [i * 2, i * 2 + 1] as const);
    const requests = pairs.flatMap(([a, b]) => [
      [conns[a]!, 'friend_request', names[b]!] as [RawConnection, ...string[]],
      [conns[b]!, 'friend_request', names[a]!] as [RawConnection, ...string[]],
    ]);
    const { frames, replies } = await atOnce(requests);
    expect(replies).toEqual(requests.map(() => 'ok'));
    for (const [a, b] of pairs) {
      const seenA = [...frames[a]!, ...(await drain(conns[a]!))].filter((f) => f.startsWith('friend,'));
      const seenB = [...frames[b]!, ...(await drain(conns[b]!))].filter((f) => f.startsWith('friend,'));
      expect(seenA.filter((f) => f === `friend,added,${names[b]}`)).toHaveLength(1);
      expect(seenB.filter((f) => f === `friend,added,${names[a]}`)).toHaveLength(1);
      // whoever asked first was asked of the other once; the second request accepted it
      expect(seenA.filter((f) => f.startsWith('friend,request,')).length + seenB.filter((f) => f.startsWith('friend,request,')).length).toBeLessThanOrEqual(1);
      expect(await conns[a]!.ask('friends')).toBe(`friends,${names[b]}`);
      expect(await conns[b]!.ask('friends')).toBe(`friends,${names[a]}`);
      expect(await conns[a]!.ask('friend_requests')).toBe('friend_requests');
      expect(await conns[b]!.ask('friend_requests')).toBe('friend_requests');
    }
  });

  it('two accepts of one request at once: one ok, one no_request, friend added once to each connection', async () => {
    const names = await fx.users(...Array.from({ length: PAIRS }, (_, i) => [`y${i}a`, `y${i}b`]).flat());
    const pairs = Array.from({ length: PAIRS }, (_, i) => [names[i * 2]!, names[i * 2 + 1]!] as const);
    const asker = new Map<string, RawConnection>();
    const accepters = new Map<string, [RawConnection, RawConnection]>();
    for (const [a, b] of pairs) {
      const sa = await fx.loggedIn(a);
      const [b1, b2] = [await fx.loggedIn(b), await fx.loggedIn(b)];
      expect(await sa.ask('friend_request', b)).toBe('ok');
      expect(await b1.next()).toBe(`friend,request,${a}`);
      expect(await b2.next()).toBe(`friend,request,${a}`);
      asker.set(a, sa);
      accepters.set(a, [b1, b2]);
    }
    const requests = pairs.flatMap(([a]) => accepters.get(a)!.map((c) => [c, 'friend_accept', a] as [RawConnection, ...string[]]));
    const { frames, replies } = await atOnce(requests);
    for (const [i, [a, b]] of pairs.entries()) {
      expect([replies[i * 2], replies[i * 2 + 1]].sort()).toEqual([expect.stringMatching(/^error,nonfatal,no_request(,|$)/), 'ok'].sort());
      const [b1, b2] = accepters.get(a)!;
      for (const [j, c] of [b1, b2].entries()) {
        const seen = [...frames[i * 2 + j]!, ...(await drain(c))].filter((f) => f.startsWith('friend,'));
        expect(seen).toEqual([`friend,added,${a}`]);
      }
      expect((await drain(asker.get(a)!)).filter((f) => f.startsWith('friend,'))).toEqual([`friend,added,${b}`]);
    }
  });
});
