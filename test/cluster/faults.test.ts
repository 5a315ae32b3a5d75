/**
 * CLUSTER.md rules 6 and 7: a node killed without a word takes its users
 * offline for the others within --presence-ttl + 2 s; a Redis restart loses
 * no acknowledged message and pushes cross nodes again afterwards. Only in
 * the postgres project.
 */
import { afterAll, describe, expect, inject, it } from 'vitest';
import { RawConnection } from '../helpers/raw.ts';
import { removeDir, spawnServer, startServer, storeArgs, tempDir, type ChildServer, type TestServer } from '../helpers/server.ts';
import { freshUsers, loggedIn, PW } from '../helpers/users.ts';
import { redisBin, startRedis, type Redis } from '../../tools/redis.ts';

const redisUrl = inject('redisUrl');
const servers: TestServer[] = [];
const children: ChildServer[] = [];
const opened: RawConnection[] = [];
let redis: Redis | undefined;

afterAll(async () => {
  for (const c of opened) c.close();
  for (const child of children) if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
  for (const s of servers) await s.stop();
  for (const s of servers) removeDir(s.data);
  await redis?.stop();
});

async function befriend(ca: RawConnection, a: string, cb: RawConnection, b: string): Promise<void> {
  expect(await ca.ask('friend_request', b)).toBe('ok');
  expect(await cb.next()).toBe(`friend,request,${a}`);
  cb.send('friend_accept', a);
  expect(await cb.nextN(2)).toEqual([`friend,added,${a}`, 'ok']);
  expect(await ca.next()).toBe(`friend,added,${b}`);
}

describe.skipIf(redisUrl === undefined)('faults', () => {
  it('a node killed with SIGKILL takes its users offline for the others within the TTL plus 2 s', { timeout: 40_000 }, async () => {
    const data = tempDir('textserver-cluster-kill-');
    const store = await storeArgs(data);
    const ttl = 2;
    const node = await startServer([...store, '--bus', redisUrl!, '--node-id', `k${process.pid}a`, '--presence-ttl', String(ttl)]);
    servers.push(node);
    const child = await spawnServer([...store, '--data', tempDir('textserver-cluster-kill2-'), '--bus', redisUrl!, '--node-id', `k${process.pid}b`, '--presence-ttl', String(ttl)]);
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

  it('a node stopped with SIGTERM takes its users offline for the others within 1 s', { timeout: 40_000 }, async () => {
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
    expect(await ca.next()).toBe(`presence,${b},offline`);
    expect(performance.now() - started).toBeLessThan(1000);
    await stopping;
  });

  it.skipIf(redisBin() === undefined)('a Redis restart loses no acknowledged message, and pushes cross nodes again after it', async () => {
    redis = await startRedis();
    const store = await storeArgs(tempDir('textserver-cluster-redis-'));
    for (const i of [1, 2]) servers.push(await startServer([...store, '--bus', redis.url, '--node-id', `r${process.pid}n${i}`]));
    const [n1, n2] = servers.slice(-2) as [TestServer, TestServer];
    const [a, b] = await freshUsers(n1.port, 'xa', 'xb');
    const ca = await loggedIn(n1.port, a!, opened);
    const v1 = await loggedIn(n2.port, b!, opened);
    const stream = await loggedIn(n2.port, b!, opened);
    const epoch = (await stream.ask('resume', '', '0')).split(',')[1]!;
    expect(await ca.ask('send', b!, 'n', '1')).toBe('ok');
    expect(await v1.next()).toBe(`send,${a},n,1`);
    expect(await stream.next()).toBe(`inbox,1,send,${a},n,1`);

    await redis.kill();
    // acknowledged while Redis is away: committed in PostgreSQL, the doorbell dropped
    for (const i of [2, 3]) expect(await ca.ask('send', b!, 'n', String(i))).toBe('ok');
    await redis.start();
    // recovered from the store once the nodes are subscribed again, in order, once
    expect(await stream.nextN(2, 10_000)).toEqual([`inbox,2,send,${a},n,2`, `inbox,3,send,${a},n,3`]);
    expect(await v1.nextN(2, 10_000)).toEqual([`send,${a},n,2`, `send,${a},n,3`]);
    // and live pushes cross again
    expect(await ca.ask('send', b!, 'n', '4')).toBe('ok');
    expect(await v1.next(10_000)).toBe(`send,${a},n,4`);
    expect(await stream.next()).toBe(`inbox,4,send,${a},n,4`);
    expect(epoch).not.toBe('');
  });
});
