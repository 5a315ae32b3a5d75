/** Bus.lease on a real redis-server: two "nodes" (two buses) in one process. */
import pino from 'pino';
import { createClient } from 'redis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { LocalBus } from '../../src/bus/local-bus.ts';
import { RedisBus } from '../../src/bus/redis-bus.ts';
import { redisBin, startRedis, type Redis } from '../../tools/redis.ts';
import { eventually } from '../helpers/eventually.ts';

const url = inject('redisUrl');
const log = pino({ level: 'silent' });
const open: { close(): Promise<void> }[] = [];
let n = 0;

async function node(redisUrl: string, leaseTtlMs?: number): Promise<RedisBus> {
  const bus = await RedisBus.start({ url: redisUrl, nodeId: `lease-${process.pid}-${++n}`, log, connectWaitMs: 200, ...(leaseTtlMs ? { leaseTtlMs } : {}) });
  open.push(bus);
  return bus;
}

/** A lease name no other test uses. */
const fresh = () => `ts:test:drain:{${process.pid}-${++n}}`;

afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

describe('LocalBus.lease', () => {
  it('grants at once, synchronously, every time', () => {
    const bus = new LocalBus('alone');
    const first = bus.lease('x');
    expect(first).toBeDefined();
    expect(first instanceof Promise).toBe(false);
    expect(bus.lease('x')).toBeDefined();
  });
});

describe.skipIf(url === undefined)('RedisBus.lease', () => {
  it('is held by one node at a time, renewed past its TTL while held, and free again once released', async () => {
    const a = await node(url!, 300);
    const b = await node(url!, 300);
    const name = fresh();
    const held = await a.lease(name);
    expect(held).toBeDefined();
    expect(await b.lease(name)).toBeUndefined();
    // well past the TTL: still a's, because a renews it
    await new Promise((r) => setTimeout(r, 900));
    expect(await b.lease(name)).toBeUndefined();
    held!.release();
    // a's release goes on a's connection: b may ask before it arrives
    let taken: Awaited<ReturnType<RedisBus['lease']>>;
    await eventually(async () => expect((taken = await b.lease(name))).toBeDefined());
    // a's release, late or repeated, never removes b's lease
    held!.release();
    expect(await a.lease(name)).toBeUndefined();
    taken!.release();
  });

  it("lapses within its TTL once its node stops renewing (died), and the other node's is not released by it", async () => {
    const a = await node(url!, 300);
    const b = await node(url!, 300);
    const name = fresh();
    const held = await a.lease(name);
    expect(held).toBeDefined();
    await a.close(); // no renewals from here, no release: as a node killed
    await eventually(async () => expect(await b.lease(name)).toBeDefined(), 3000);
    held!.release();
    const c = await node(url!, 300);
    expect(await c.lease(name)).toBeUndefined();
  });
});

describe.skipIf(url === undefined)('RedisBus.lease lost', () => {
  it('tells its holder when another took it (it lapsed while not renewed), and is taken back when Redis lost it', async () => {
    const a = await node(url!, 300);
    const raw = createClient({ url: url! });
    await raw.connect();
    try {
      const name = fresh();
      const held = await a.lease(name);
      let lost = 0;
      held!.onLost(() => lost++);
      await raw.del(name); // Redis restarted empty: the next renewal takes it again
      await eventually(async () => expect(await raw.get(name)).not.toBeNull(), 2000);
      expect(lost).toBe(0);
      await raw.set(name, 'another-node');
      await eventually(() => expect(lost).toBe(1), 2000);
      held!.release();
      expect(await raw.get(name)).toBe('another-node');
    } finally {
      await raw.quit();
    }
  });
});

describe.skipIf(redisBin() === undefined)('RedisBus.lease when Redis is down', () => {
  let redis: Redis | undefined;
  afterEach(async () => {
    await redis?.stop();
    redis = undefined;
  });

  it('is granted anyway (the work done twice beats the work left undone)', async () => {
    redis = await startRedis();
    const a = await node(redis.url);
    await redis.kill();
    await eventually(() => expect(a.up).toBe(false), 5000);
    const held = await a.lease(fresh());
    expect(held).toBeDefined();
    held!.release();
  });
});
