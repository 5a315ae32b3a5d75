/**
 * Contract statements that must hold when clients do the same thing at the
 * same moment: a name is taken once (PROTOCOL.md, compared
 * case-insensitively), a stored message is delivered once (PROTOCOL.md), a
 * repeat join is silent (MODULES.md) even when the two joins race.
 */
import { describe, expect, it } from 'vitest';
import type { RawConnection } from '../helpers/raw.ts';
import { eventually } from '../helpers/eventually.ts';
import { errorOf as err, expectNoMoreFrames, PW, serverFixture } from '../helpers/users.ts';

const f = serverFixture(['--user-rate', '0']);

describe('at the same moment', () => {
  it('ten registers of one name in different cases: exactly one ok, the others name_taken', async () => {
    const base = `Race${process.pid % 1000}${Date.now() % 10000}`;
    const conns = await Promise.all(Array.from({ length: 10 }, () => f.open()));
    const spellings = conns.map((_, i) => (i % 2 === 0 ? base.toLowerCase() : base.toUpperCase()));
    const replies = await Promise.all(conns.map((c, i) => c.ask('register', spellings[i]!, PW)));
    expect(replies.filter((r) => r === 'ok')).toHaveLength(1);
    for (const r of replies.filter((r) => r !== 'ok')) expect(r).toMatch(err('name_taken'));
    const winner = spellings[replies.indexOf('ok')]!;
    expect(await conns[0]!.ask('login', base, PW)).toBe('ok');
    expect(await conns[0]!.ask('whoami')).toBe(`user,${winner}`);
  });

  it('five connections logging in at once: every stored message is delivered once in all, oldest first where it lands', async () => {
    const [to, from] = await f.users('lr', 'lrfrom');
    const d = await f.loggedIn(from!);
    const sent = Array.from({ length: 20 }, (_, i) => `m${i}`);
    for (const m of sent) expect(await d.ask('send', to!, 'msg', m)).toBe('ok');
    const conns: RawConnection[] = await Promise.all(Array.from({ length: 5 }, () => f.open()));
    for (const c of conns) c.send('login', to!, PW);
    for (const c of conns) expect(await c.next()).toBe('ok');
    const drained = () => conns.flatMap((c) => c.frames.filter((x) => x.startsWith('send,')).map((x) => x.split(',')[3]!));
    await eventually(() => expect(drained().length).toBeGreaterThanOrEqual(sent.length));
    for (const c of conns) c.send('nop'); // answered after what each connection was written so far
    await eventually(() => expect(conns.every((c) => c.frames.includes(''))).toBe(true));
    expect([...drained()].sort()).toEqual([...sent].sort());
    for (const c of conns) {
      const mine = c.frames.filter((x) => x.startsWith('send,')).map((x) => Number(x.split(',')[3]!.slice(1)));
      expect(mine).toEqual([...mine].sort((a, b) => a - b));
    }
  });

  it('two connections of one user joining at once: one joined push to each connection, two oks', async () => {
    const [a] = await f.users('jr');
    const room = `jr-${a}`;
    const c1 = await f.loggedIn(a!);
    const c2 = await f.loggedIn(a!);
    c1.send('join', room);
    c2.send('join', room);
    const [f1, f2] = await Promise.all([c1.nextN(2), c2.nextN(2)]);
    const pushed = `room,${room},joined,${a}`;
    // each connection sees the one push and its own ok, in some order for the one that did not join first
    expect([...f1!].sort()).toEqual([pushed, 'ok'].sort());
    expect([...f2!].sort()).toEqual([pushed, 'ok'].sort());
    await expectNoMoreFrames(c1);
    await expectNoMoreFrames(c2);
    expect(await c1.ask('members', room)).toBe(`members,${room},${a}`);
  });
});
