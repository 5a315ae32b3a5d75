/**
 * `--friends-only` across nodes (CLUSTER.md rule 2): a friendship made on
 * one node lets a `send` through on another; without it the other node
 * answers not_friends. Postgres project only.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RawConnection } from '../helpers/raw.ts';
import { removeDir, startServer, storeArgs, tempDir, type TestServer } from '../helpers/server.ts';
import { freshUsers, loggedIn } from '../helpers/users.ts';
import { redisBin, startRedis, type Redis } from '../../tools/redis.ts';

const nodes: TestServer[] = [];
const opened: RawConnection[] = [];
let redis: Redis | undefined;

describe.skipIf(redisBin() === undefined)('--friends-only on two nodes', () => {
  beforeAll(async () => {
    redis = await startRedis();
    const store = await storeArgs(tempDir('textserver-cluster-fo-'));
    for (const i of [1, 2]) nodes.push(await startServer([...store, '--bus', redis.url, '--node-id', `f${process.pid}n${i}`, '--friends-only']));
  });

  afterAll(async () => {
    for (const c of opened) c.close();
    for (const n of nodes) await n.stop();
    for (const n of nodes) removeDir(n.data);
    await redis?.stop();
  });

  it('refuses a send to a non-friend, and lets it through once they befriended on the other node', async () => {
    const [a, b] = await freshUsers(nodes[0]!.port, 'oa', 'ob');
    const ca = await loggedIn(nodes[0]!.port, a!, opened);
    const cb = await loggedIn(nodes[1]!.port, b!, opened);
    expect(await ca.ask('send', b!, 'msg', 'x')).toMatch(/^error,nonfatal,not_friends/);
    // the friendship is made on b's node
    expect(await cb.ask('friend_request', a!)).toBe('ok');
    const next = async (c: RawConnection) => {
      const f = await c.next();
      return f.startsWith('presence,') ? c.next() : f;
    };
    expect(await next(ca)).toBe(`friend,request,${b}`);
    ca.send('friend_accept', b!);
    expect([await next(ca), await next(ca)]).toEqual([`friend,added,${b}`, 'ok']);
    expect(await next(cb)).toBe(`friend,added,${a}`);
    expect(await ca.ask('send', b!, 'msg', 'now friends')).toBe('ok');
    expect(await next(cb)).toBe(`send,${a},msg,now friends`);
  });
});
