/**
 * CLUSTER.md rules 6 and 7: a node killed without a word takes its users
 * offline for the others within --presence-ttl + 2 s; a Redis restart loses
 * no acknowledged message and pushes cross nodes again afterwards. Only in
 * the postgres project.
 */
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import { RawConnection } from '../helpers/raw.ts';
import { removeDir, spawnServer, startServer, storeArgs, tempDir, type ChildServer, type TestServer } from '../helpers/server.ts';
import { expectNoMoreFrames, freshUsers, loggedIn, PW } from '../helpers/users.ts';
import { redisBin, startRedis, type Redis } from '../../tools/redis.ts';

const servers: TestServer[] = [];
const children: ChildServer[] = [];
const opened: RawConnection[] = [];
/** A Redis per test, as each test's cluster has a database of its own (user ids name Redis keys). */
const redises: Redis[] = [];

async function ownRedis(): Promise<Redis> {
  const r = await startRedis();
  redises.push(r);
  return r;
}

afterAll(async () => {
  for (const c of opened) c.close();
  for (const child of children) if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
  for (const s of servers) await s.stop();
  for (const s of servers) removeDir(s.data);
  for (const r of redises) await r.stop();
});

/** b's online announcement may reach a once they are friends (it reads b's friends after b's login): skipped if it comes. */
async function befriend(ca: RawConnection, a: string, cb: RawConnection, b: string): Promise<void> {
  const next = async (c: RawConnection) => {
    const f = await c.next();
    return f === `presence,${b},online` || f === `presence,${a},online` ? c.next() : f;
  };
  ca.send('friend_request', b);
  expect(await next(ca)).toBe('ok');
  expect(await next(cb)).toBe(`friend,request,${a}`);
  cb.send('friend_accept', a);
  expect([await next(cb), await next(cb)]).toEqual([`friend,added,${a}`, 'ok']);
  expect(await next(ca)).toBe(`friend,added,${b}`);
}

/**
 * The next frame other than `skip`. A friend's `presence,<b>,online` comes
 * through Redis and the `friend,added` through the inbox, so it may arrive
 * after everything `befriend` read.
 */
async function nextBut(c: RawConnection, skip: string): Promise<string> {
  const f = await c.next();
  return f === skip ? c.next() : f;
}

describe.skipIf(redisBin() === undefined)('faults', () => {
  it('a node killed with SIGKILL takes its users offline for the others within the TTL plus 2 s', { timeout: 40_000 }, async () => {
    const redisUrl = (await ownRedis()).url;
    const store = await storeArgs(tempDir('textserver-cluster-kill-'));
    const ttl = 2;
    const node = await startServer([...store, '--bus', redisUrl!, '--node-id', `k${process.pid}a`, '--presence-ttl', String(ttl)]);
    servers.push(node);
    const child = await spawnServer([
      ...store,
      '--data',
      tempDir('textserver-cluster-kill2-'),
      '--bus',
      redisUrl!,
      '--node-id',
      `k${process.pid}b`,
      '--presence-ttl',
      String(ttl),
    ]);
    children.push(child);
    const [a, b] = await freshUsers(node.port, 'ka', 'kb');
    const ca = await loggedIn(node.port, a!, opened);
    const cb = await loggedIn(child.port, b!, opened);
    await befriend(ca, a!, cb, b!);
    const killed = performance.now();
    child.proc.kill('SIGKILL');
    expect(await ca.next((ttl + 4) * 1000)).toBe(`presence,${b},offline`);
    expect(performance.now() - killed).toBeLessThan((ttl + 2) * 1000 + 500);
    // its messages are not lost: b logs in on the surviving node and gets what was stored meanwhile
    expect(await ca.ask('send', b!, 'msg', 'after the crash')).toBe('ok');
    const again = await RawConnection.open(node.port);
    opened.push(again);
    expect(await again.ask('login', b!, PW)).toBe('ok');
    expect(await again.next()).toBe(`send,${a},msg,after the crash`);
  });

  it('typing owned by a node killed with SIGKILL still stops for members on another node, within the timeout plus 2 s', { timeout: 40_000 }, async () => {
    const redisUrl = (await ownRedis()).url;
    const store = await storeArgs(tempDir('textserver-cluster-typing-'));
    const timeout = 1;
    // a presence TTL far past the typing timeout: only the copy's own timer can end the typing in time
    const shared = ['--bus', redisUrl, '--presence-ttl', '30', '--typing-timeout', String(timeout)];
    const node = await startServer([...store, ...shared, '--node-id', `y${process.pid}a`]);
    servers.push(node);
    const child = await spawnServer([...store, '--data', tempDir('textserver-cluster-typing2-'), ...shared, '--node-id', `y${process.pid}b`]);
    children.push(child);
    const [t, m] = await freshUsers(node.port, 'yt', 'ym');
    const room = `yroom${process.pid}`;
    const cm = await loggedIn(node.port, m!, opened);
    expect(await cm.ask('join', room)).toBe(`room,${room},joined,${m}`);
    expect(await cm.next()).toBe('ok');
    const ct = await loggedIn(child.port, t!, opened);
    ct.send('join', room);
    expect(await ct.nextN(2)).toEqual([`room,${room},joined,${t}`, 'ok']);
    expect(await cm.next()).toBe(`room,${room},joined,${t}`);
    expect(await ct.ask('typing', room, 'start')).toBe('ok');
    expect(await cm.next()).toBe(`room,${room},typing,${t},start`);
    const killed = performance.now();
    child.proc.kill('SIGKILL');
    expect(await cm.next((timeout + 4) * 1000)).toBe(`room,${room},typing,${t},stop`);
    expect(performance.now() - killed).toBeLessThan((timeout + 2) * 1000 + 500);
    await expectNoMoreFrames(cm);
  });

  it('a node stopped with SIGTERM takes its users offline for the others within 1 s', { timeout: 40_000 }, async () => {
    const redisUrl = (await ownRedis()).url;
    const store = await storeArgs(tempDir('textserver-cluster-term-'));
    const stay = await startServer([...store, '--bus', redisUrl!, '--node-id', `t${process.pid}a`]);
    const go = await startServer([...store, '--bus', redisUrl!, '--node-id', `t${process.pid}b`]);
    servers.push(stay, go);
    const [a, b] = await freshUsers(stay.port, 'ta', 'tb');
    const ca = await loggedIn(stay.port, a!, opened);
    const cb = await loggedIn(go.port, b!, opened);
    await befriend(ca, a!, cb, b!);
    const stopping = go.stop();
    const started = performance.now();
    expect(await nextBut(ca, `presence,${b},online`)).toBe(`presence,${b},offline`);
    expect(performance.now() - started).toBeLessThan(1000);
    await stopping;
  });

  it("a node stopped with SIGTERM while a user's request is still running takes its users offline within 1 s, and the request still completes", { timeout: 40_000 }, async () => {
    const redisUrl = (await ownRedis()).url;
    const store = await storeArgs(tempDir('textserver-cluster-term2-'));
    const stay = await startServer([...store, '--bus', redisUrl, '--node-id', `u${process.pid}a`]);
    const go = await startServer([...store, '--bus', redisUrl, '--node-id', `u${process.pid}b`]);
    servers.push(stay, go);
    const [a, b] = await freshUsers(stay.port, 'ua', 'ub');
    const ca = await loggedIn(stay.port, a!, opened);
    const cb = await loggedIn(go.port, b!, opened);
    await befriend(ca, a!, cb, b!);
    // b's send waits for the inbox rows this test holds: a request in flight the stop lets finish
    const db = new pg.Client({ connectionString: store[1] });
    await db.connect();
    try {
      await db.query('BEGIN');
      await db.query('SELECT 1 FROM inbox_streams FOR UPDATE');
      cb.send('send', a!, 'msg', 'in flight');
      const waiting = "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
      await eventually(async () => expect((await db.query<{ n: number }>(waiting)).rows[0]!.n).toBeGreaterThan(0));
      const stopping = go.stop();
      const started = performance.now();
      expect(await nextBut(ca, `presence,${b},online`)).toBe(`presence,${b},offline`);
      expect(performance.now() - started).toBeLessThan(1000);
      await db.query('ROLLBACK');
      // nothing acknowledged lost: the send finishes, is answered, and reaches a
      expect(await cb.next()).toBe('ok');
      expect(await ca.next()).toBe(`send,${b},msg,in flight`);
      await stopping;
    } finally {
      await db.end();
    }
  });

  it('a Redis restart loses no acknowledged message, and pushes cross nodes again after it', async () => {
    const redis = await ownRedis();
    const store = await storeArgs(tempDir('textserver-cluster-redis-'));
    for (const i of [1, 2]) servers.push(await startServer([...store, '--bus', redis.url, '--node-id', `r${process.pid}n${i}`]));
    const [n1, n2] = servers.slice(-2) as [TestServer, TestServer];
    // two recipients on n2: b with a version 1 connection, c with an inbox connection (one connection takes a stored entry)
    const [a, b, c] = await freshUsers(n1.port, 'xa', 'xb', 'xc');
    const ca = await loggedIn(n1.port, a!, opened);
    const v1 = await loggedIn(n2.port, b!, opened);
    const stream = await loggedIn(n2.port, c!, opened);
    const epoch = (await stream.ask('resume', '', '0')).split(',')[1]!;
    expect(await ca.ask('send', b!, 'n', '1')).toBe('ok');
    expect(await ca.ask('send', c!, 'n', '1')).toBe('ok');
    expect(await v1.next()).toBe(`send,${a},n,1`);
    expect(await stream.next()).toBe(`inbox,1,send,${a},n,1`);

    await redis.kill();
    // acknowledged while Redis is away: committed in PostgreSQL, the doorbell dropped
    for (const i of [2, 3]) for (const to of [b!, c!]) expect(await ca.ask('send', to, 'n', String(i))).toBe('ok');
    await redis.start();
    // recovered from the store once the nodes are subscribed again, in order, once
    expect(await stream.nextN(2, 10_000)).toEqual([`inbox,2,send,${a},n,2`, `inbox,3,send,${a},n,3`]);
    expect(await v1.nextN(2, 10_000)).toEqual([`send,${a},n,2`, `send,${a},n,3`]);
    // and live pushes cross again
    for (const to of [b!, c!]) expect(await ca.ask('send', to, 'n', '4')).toBe('ok');
    expect(await v1.next(10_000)).toBe(`send,${a},n,4`);
    expect(await stream.next(10_000)).toBe(`inbox,4,send,${a},n,4`);
    expect(epoch).not.toBe('');
  });

  it('after a Redis restart every version 1 connection of the user gets what was sent meanwhile, once each, in order', async () => {
    const redis = await ownRedis();
    const store = await storeArgs(tempDir('textserver-cluster-redis2-'));
    for (const i of [1, 2]) servers.push(await startServer([...store, '--bus', redis.url, '--node-id', `v${process.pid}n${i}`]));
    const [n1, n2] = servers.slice(-2) as [TestServer, TestServer];
    const [s, r] = await freshUsers(n1.port, 'vs', 'vr');
    const cs = await loggedIn(n1.port, s!, opened);
    const first = await loggedIn(n2.port, r!, opened);
    const second = await loggedIn(n2.port, r!, opened);
    expect(await cs.ask('send', r!, 'n', '1')).toBe('ok');
    for (const c of [first, second]) expect(await c.next()).toBe(`send,${s},n,1`);

    await redis.kill();
    const missed = ['2', '3', '4', '5'];
    for (const n of missed) expect(await cs.ask('send', r!, 'n', n)).toBe('ok');
    await redis.start();
    for (const c of [first, second]) expect(await c.nextN(missed.length, 10_000)).toEqual(missed.map((n) => `send,${s},n,${n}`));
    // once each: the next thing either connection gets is what is sent now
    expect(await cs.ask('send', r!, 'n', '6')).toBe('ok');
    for (const c of [first, second]) expect(await c.next(10_000)).toBe(`send,${s},n,6`);
    for (const c of [first, second]) await expectNoMoreFrames(c);
    // and a later login gets none of it again: every entry was marked received
    const third = await RawConnection.open(n2.port);
    opened.push(third);
    expect(await third.ask('login', r!, PW)).toBe('ok');
    await expectNoMoreFrames(third);
  });

  it("after a Redis restart a user's version 1 connections on another node get the live messages sent meanwhile, once each, in order, each only those sent since its login", async () => {
    const redis = await ownRedis();
    const store = await storeArgs(tempDir('textserver-cluster-redis3-'));
    for (const i of [1, 2]) servers.push(await startServer([...store, '--bus', redis.url, '--node-id', `w${process.pid}n${i}`]));
    const [n1, n2] = servers.slice(-2) as [TestServer, TestServer];
    const [s, r] = await freshUsers(n1.port, 'ws', 'wr');
    const cs = await loggedIn(n1.port, s!, opened);
    // r on both nodes: the one on n1 takes every send live there, so nothing is stored pending for n2
    const here = await loggedIn(n1.port, r!, opened);
    const there = await loggedIn(n2.port, r!, opened);
    expect(await cs.ask('send', r!, 'n', '1')).toBe('ok');
    for (const c of [here, there]) expect(await c.next()).toBe(`send,${s},n,1`);

    await redis.kill();
    expect(await cs.ask('send', r!, 'n', '2')).toBe('ok');
    expect(await here.next()).toBe(`send,${s},n,2`);
    // logged in on n2 after 2 was sent: online for 3 and 4 only
    const later = await loggedIn(n2.port, r!, opened);
    for (const n of ['3', '4']) {
      expect(await cs.ask('send', r!, 'n', n)).toBe('ok');
      expect(await here.next()).toBe(`send,${s},n,${n}`);
    }
    await redis.start();
    expect(await there.nextN(3, 10_000)).toEqual(['2', '3', '4'].map((n) => `send,${s},n,${n}`));
    expect(await later.nextN(2, 10_000)).toEqual(['3', '4'].map((n) => `send,${s},n,${n}`));
    // once each: the next thing every connection gets is what is sent now
    expect(await cs.ask('send', r!, 'n', '5')).toBe('ok');
    for (const c of [here, there, later]) expect(await c.next(10_000)).toBe(`send,${s},n,5`);
    for (const c of [here, there, later]) await expectNoMoreFrames(c);
    // nothing was left stored: a new login gets none of it
    const fresh = await RawConnection.open(n2.port);
    opened.push(fresh);
    expect(await fresh.ask('login', r!, PW)).toBe('ok');
    await expectNoMoreFrames(fresh);
  });
});
