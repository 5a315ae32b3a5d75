/**
 * Cluster presence against a real redis-server: two or three registries
 * (nodes with distinct ids) in one process, each on its own bus connection.
 */
import pino from 'pino';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { PresenceRegistry } from '../../src/bus/presence-registry.ts';
import { RedisBus } from '../../src/bus/redis-bus.ts';
import { redisBin, startRedis, type Redis } from '../../tools/redis.ts';
import { eventually } from '../helpers/eventually.ts';

const url = inject('redisUrl');
const log = pino({ level: 'silent' });
const TTL_MS = 2000;
const closers: (() => Promise<void>)[] = [];
let n = 0;

type Node = { registry: PresenceRegistry; bus: RedisBus; events: string[] };

async function node(redisUrl = url!, ttlMs = TTL_MS, nodeId = `node-${process.pid}-${++n}`): Promise<Node> {
  const bus = await RedisBus.start({ url: redisUrl, nodeId, log });
  const registry = await PresenceRegistry.start({ bus, redis: bus.redis, nodeId, ttlMs, log, catchUpAfterMs: 500 });
  const events: string[] = [];
  registry.onChange((user, online) => events.push(`${user} ${online ? 'online' : 'offline'}`));
  closers.push(async () => {
    await registry.stop();
    await bus.close();
  });
  return { registry, bus, events };
}

/** User ids no other test (nor an earlier run on the same Redis) uses. */
let nextUser = Math.floor(Math.random() * 1e9) * 1000;
const user = () => ++nextUser;

/**
 * A marker user connected through `from`: once every node heard it online,
 * every change `from` announced before has been heard too (one publisher's
 * messages arrive in order), so "nothing more" can be asserted without a sleep.
 */
async function settle(from: Node, nodes: Node[]): Promise<void> {
  const marker = user();
  await from.registry.userConnected(marker);
  await eventually(() => {
    for (const x of nodes) expect(x.events).toContain(`${marker} online`);
  });
  for (const x of nodes) x.events.splice(x.events.indexOf(`${marker} online`), 1);
}

afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c()));
});

describe.skipIf(url === undefined)('PresenceRegistry', () => {
  it('announces online at the first connection anywhere and offline at the last, once, to every node', async () => {
    const a = await node();
    const b = await node();
    const u = user();
    expect(await a.registry.userConnected(u)).toBe(true);
    expect(await a.registry.userConnected(u)).toBe(false);
    expect(await b.registry.userConnected(u)).toBe(false);
    await eventually(() => expect(b.events).toEqual([`${u} online`]));
    expect(await a.registry.isOnline(u)).toBe(true);
    expect(await a.registry.userDisconnected(u)).toBe(false);
    expect(await a.registry.userDisconnected(u)).toBe(false);
    expect(await b.registry.isOnline(u)).toBe(true);
    expect(await b.registry.userDisconnected(u)).toBe(true);
    await eventually(() => expect(a.events).toEqual([`${u} online`, `${u} offline`]));
    await settle(a, [a, b]);
    await settle(b, [a, b]);
    expect(a.events).toEqual([`${u} online`, `${u} offline`]);
    expect(b.events).toEqual([`${u} online`, `${u} offline`]);
    expect(await a.registry.isOnline(u)).toBe(false);
  });

  it('of nodes racing, exactly one announces each change', async () => {
    const nodes = [await node(), await node(), await node()];
    const users = Array.from({ length: 30 }, user);
    const connected = await Promise.all(users.flatMap((u) => nodes.map((x) => x.registry.userConnected(u))));
    expect(connected.filter(Boolean)).toHaveLength(users.length);
    const disconnected = await Promise.all(users.flatMap((u) => nodes.map((x) => x.registry.userDisconnected(u))));
    expect(disconnected.filter(Boolean)).toHaveLength(users.length);
    for (const x of nodes) await settle(x, nodes);
    const expected = users.flatMap((u) => [`${u} online`, `${u} offline`]).sort();
    for (const x of nodes) expect([...x.events].sort()).toEqual(expected);
    // and in order per user: online before offline
    for (const x of nodes) for (const u of users) expect(x.events.indexOf(`${u} online`)).toBeLessThan(x.events.indexOf(`${u} offline`));
  });

  it('a node killed without a word takes its users offline for everyone within the TTL plus 2 s, once', async () => {
    const a = await node();
    const b = await node();
    const c = await node();
    const mine = user();
    const shared = user();
    await a.registry.userConnected(mine);
    await a.registry.userConnected(shared);
    await b.registry.userConnected(shared);
    await eventually(() => expect(c.events).toContain(`${mine} online`));
    const killedAt = performance.now();
    a.registry.halt();
    await eventually(() => expect(b.events).toContain(`${mine} offline`), TTL_MS + 2000);
    expect(performance.now() - killedAt).toBeLessThan(TTL_MS + 2000);
    await eventually(() => expect(c.events).toContain(`${mine} offline`));
    await settle(b, [b, c]);
    await settle(c, [b, c]);
    // the user still connected on b stays online; the dead node's user went offline once
    for (const x of [b, c]) {
      expect(x.events.filter((e) => e === `${mine} offline`)).toHaveLength(1);
      expect(x.events).not.toContain(`${shared} offline`);
    }
    expect(await b.registry.isOnline(shared)).toBe(true);
    expect(b.registry.stats.reaped + c.registry.stats.reaped).toBe(1);
  });

  it('a dead node with many users: every one offline, announced in several messages', async () => {
    const a = await node();
    const b = await node();
    const users = Array.from({ length: 1200 }, user);
    await Promise.all(users.map((u) => a.registry.userConnected(u)));
    await eventually(() => expect(b.events).toHaveLength(users.length));
    a.registry.halt();
    await eventually(() => expect(b.events.filter((e) => e.endsWith('offline'))).toHaveLength(users.length), TTL_MS + 2000);
    expect(new Set(b.events).size).toBe(2 * users.length);
  });

  it('a node stopped (SIGTERM) takes its users offline at once', async () => {
    const a = await node();
    const b = await node();
    const u = user();
    await a.registry.userConnected(u);
    await eventually(() => expect(b.events).toEqual([`${u} online`]));
    const stoppedAt = performance.now();
    await a.registry.stop();
    await eventually(() => expect(b.events).toEqual([`${u} online`, `${u} offline`]), 1000);
    expect(performance.now() - stoppedAt).toBeLessThan(1000);
  });

  it('a node restarted under the same id takes the users of its last run offline at once', async () => {
    const a = await node();
    const b = await node();
    const u = user();
    await a.registry.userConnected(u);
    await eventually(() => expect(b.events).toEqual([`${u} online`]));
    a.registry.halt();
    // well within the TTL: the new run's first write says the old run's users are gone
    await node(url, 60_000, a.registry.nodeId);
    await eventually(() => expect(b.events).toEqual([`${u} online`, `${u} offline`]), 1000);
  });

  it('onlineAmong answers for many users in one go', async () => {
    const a = await node();
    const b = await node();
    const [u1, u2, u3] = [user(), user(), user()];
    await a.registry.userConnected(u1);
    await b.registry.userConnected(u2);
    expect(await a.registry.onlineAmong([u1, u2, u3])).toEqual(new Set([u1, u2]));
  });
});

describe.skipIf(redisBin() === undefined)('PresenceRegistry when Redis restarts', () => {
  let redis: Redis | undefined;
  afterEach(async () => {
    await Promise.all(closers.splice(0).map((c) => c()));
    await redis?.stop();
    redis = undefined;
  });

  it('writes its table again after Redis came back empty, and announces the changes made meanwhile', async () => {
    redis = await startRedis();
    const a = await node(redis.url);
    const b = await node(redis.url);
    const [u1, u2, u3] = [user(), user(), user()];
    await a.registry.userConnected(u1);
    await a.registry.userConnected(u2);
    await eventually(() => expect(b.events).toEqual([`${u1} online`, `${u2} online`]));
    await redis.kill();
    // meanwhile: u2 leaves, u3 arrives; nothing can be announced
    expect(await a.registry.userDisconnected(u2)).toBe(false);
    expect(await a.registry.userConnected(u3)).toBe(false);
    await redis.start();
    await eventually(async () => expect(await b.registry.onlineAmong([u1, u2, u3])).toEqual(new Set([u1, u3])), 10_000);
    // u2 left and u3 arrived while Redis was away: a announces both when it writes its table again,
    // and b, whose subscription may have come back after that, catches up from ts:everyone
    await eventually(() => expect(b.events.slice(2).sort()).toEqual([`${u2} offline`, `${u3} online`]), 10_000);
    // u1, written again, is no change: not announced twice
    await settle(a, [a, b]);
    expect(b.events).toHaveLength(4);
  });
});
