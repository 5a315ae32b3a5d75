/** The Redis bus against a real redis-server: two "nodes" (two buses, distinct node ids) in one process. */
import pino from 'pino';
import { createClient } from 'redis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import type { Delivered } from '../../src/bus/bus.ts';
import { RedisBus } from '../../src/bus/redis-bus.ts';
import { redisBin, startRedis, type Redis } from '../../tools/redis.ts';
import { eventually } from '../helpers/eventually.ts';

const url = inject('redisUrl');
const log = pino({ level: 'silent' });
const open: { close(): Promise<void> }[] = [];
let n = 0;

async function node(id: string, redisUrl = url!): Promise<{ bus: RedisBus; got: [string, Delivered][] }> {
  const bus = await RedisBus.start({ url: redisUrl, nodeId: `${id}-${++n}`, log });
  open.push(bus);
  const got: [string, Delivered][] = [];
  bus.onMessage((channel, message) => got.push([channel, message]));
  return { bus, got };
}

/** A channel no other test uses. */
const fresh = (name: string) => `ts:test:${name}:${process.pid}:${++n}`;

afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

describe.skipIf(url === undefined)('RedisBus', () => {
  it('carries a message to the other subscribed node once, with its origin, and never back to the publisher', async () => {
    const a = await node('a');
    const b = await node('b');
    const ch = fresh('u');
    await a.bus.subscribe(ch);
    await b.bus.subscribe(ch);
    // published right after subscribe() resolved: the subscription is active (rule 5)
    a.bus.publish(ch, { kind: 'send', fields: { from: 'ann', text: 'hi' }, seq: 7 });
    await eventually(() => expect(b.got).toHaveLength(1));
    expect(b.got[0]).toEqual([ch, { origin: a.bus.nodeId, kind: 'send', fields: { from: 'ann', text: 'hi' }, seq: 7 }]);
    // the marker goes the other way: when it arrived, a's own message would have too
    b.bus.publish(ch, { kind: 'marker' });
    await eventually(() => expect(a.got.map(([, m]) => m.kind)).toEqual(['marker']));
    expect(a.bus.stats.published).toBe(1);
    expect(b.bus.stats.received).toBe(1);
  });

  it('counts subscriptions: the last unsubscribe ends it, and an unsubscribed channel delivers nothing', async () => {
    const a = await node('a');
    const b = await node('b');
    const ch = fresh('r');
    const marker = fresh('marker');
    await b.bus.subscribe(marker);
    await b.bus.subscribe(ch);
    await b.bus.subscribe(ch);
    await b.bus.unsubscribe(ch);
    a.bus.publish(ch, { kind: 'one' });
    await eventually(() => expect(b.got.map(([, m]) => m.kind)).toEqual(['one']));
    await b.bus.unsubscribe(ch);
    await eventually(async () => expect(await numsub(ch)).toBe(0));
    a.bus.publish(ch, { kind: 'two' });
    a.bus.publish(marker, { kind: 'marker' });
    // one publisher's messages arrive in order: once the marker is in, "two" would have been
    await eventually(() => expect(b.got.map(([, m]) => m.kind)).toEqual(['one', 'marker']));
  });

  it('a join right after a leave resolves only once subscribed again', async () => {
    const a = await node('a');
    const b = await node('b');
    for (let i = 0; i < 20; i++) {
      const ch = fresh('race');
      await b.bus.subscribe(ch);
      void b.bus.unsubscribe(ch);
      await b.bus.subscribe(ch);
      // published the moment the join resolved: must arrive (rule 5)
      a.bus.publish(ch, { kind: `still${i}` });
      await eventually(() => expect(b.got.map(([, m]) => m.kind)).toContain(`still${i}`));
      expect(await numsub(ch)).toBe(1);
    }
  });

  it('drops what is not a message of ours, counted, without failing', async () => {
    const b = await node('b');
    const ch = fresh('junk');
    await b.bus.subscribe(ch);
    const raw = createClient({ url });
    await raw.connect();
    try {
      await raw.sPublish(ch, 'not json');
      await raw.sPublish(ch, '{"o":1}');
      await raw.sPublish(ch, JSON.stringify({ o: 'x', k: 'ok' }));
    } finally {
      raw.destroy();
    }
    await eventually(() => expect(b.got.map(([, m]) => m.kind)).toEqual(['ok']));
    expect(b.bus.stats.malformed).toBe(2);
  });

  it('a node whose publishes were dropped tells the others when it is back, and they re-read', async () => {
    const a = await node('a');
    const b = await node('b');
    let rereads = 0;
    b.bus.onResubscribed(() => rereads++);
    const ch = fresh('u');
    await b.bus.subscribe(ch);
    // a's command connection alone goes away; b's subscription stays up and hears nothing
    a.bus.redis.destroy();
    a.bus.publish(ch, { kind: 'missed' });
    expect(a.bus.stats.dropped).toBe(1);
    await a.bus.redis.connect();
    await eventually(() => expect(rereads).toBe(1));
    expect(b.got).toEqual([]);
  });

  async function numsub(channel: string): Promise<number> {
    const raw = createClient({ url });
    await raw.connect();
    try {
      const reply = (await raw.sendCommand(['PUBSUB', 'SHARDNUMSUB', channel])) as unknown[];
      return Number(reply[1]);
    } finally {
      raw.destroy();
    }
  }
});

describe.skipIf(redisBin() === undefined)('RedisBus when Redis goes away', () => {
  let redis: Redis | undefined;
  afterEach(async () => {
    await redis?.stop();
    redis = undefined;
  });

  it('drops and counts while down, says down within 5 s, and subscribes everything again when Redis is back', async () => {
    redis = await startRedis();
    const a = await node('a', redis.url);
    const b = await node('b', redis.url);
    let resubscribed = 0;
    b.bus.onResubscribed(() => resubscribed++);
    const before = fresh('before');
    await b.bus.subscribe(before);
    expect(a.bus.up && b.bus.up).toBe(true);

    await redis.kill();
    await eventually(() => expect(a.bus.up || b.bus.up).toBe(false), 5000);
    a.bus.publish(before, { kind: 'lost' });
    expect(a.bus.stats.dropped).toBe(1);
    // asked for while down: resolves at once, made when Redis is back
    const during = fresh('during');
    await b.bus.subscribe(during);

    await redis.start();
    await eventually(() => expect(a.bus.up && b.bus.up).toBe(true), 10_000);
    await eventually(() => expect(resubscribed).toBeGreaterThanOrEqual(1), 10_000);
    a.bus.publish(before, { kind: 'b1' });
    a.bus.publish(during, { kind: 'd1' });
    await eventually(() => expect(b.got.map(([, m]) => m.kind).sort()).toEqual(['b1', 'd1']));
  });

  it('a node that starts while Redis is down works alone, then joins', async () => {
    redis = await startRedis();
    await redis.kill();
    const bus = await RedisBus.start({ url: redis.url, nodeId: `late-${++n}`, log, connectWaitMs: 100 });
    open.push(bus);
    expect(bus.up).toBe(false);
    bus.publish('ts:u:1', { kind: 'x' });
    expect(bus.stats.dropped).toBe(1);
    await bus.subscribe('ts:u:1');
    await redis.start();
    await eventually(() => expect(bus.up).toBe(true), 10_000);
    const other = await node('other', redis.url);
    await eventually(() => expect(bus.stats.resubscribed).toBe(1), 10_000);
    other.bus.publish('ts:u:1', { kind: 'hello' });
    const got: string[] = [];
    bus.onMessage((_c, m) => got.push(m.kind));
    await eventually(() => expect(got).toEqual(['hello']));
  });
});
