/** openCluster: local without --bus, Redis with it, from the resolved options. */
import pino from 'pino';
import { describe, expect, inject, it } from 'vitest';
import { LocalBus } from '../../src/bus/local-bus.ts';
import { openCluster } from '../../src/bus/open-cluster.ts';
import { RedisBus } from '../../src/bus/redis-bus.ts';
import { resolveOptions } from '../../src/config.ts';

const url = inject('redisUrl');
const log = pino({ level: 'silent' });

describe('openCluster', () => {
  it('without --bus: the local bus, no cluster presence, the in-memory login counters', async () => {
    const c = await openCluster(resolveOptions([], {}), log);
    expect(c.bus).toBeInstanceOf(LocalBus);
    expect(c.presence).toBeUndefined();
    expect(c.loginThrottle('name', 5, 60_000)).toBeUndefined();
    await c.close();
  });

  it.skipIf(url === undefined)('with --bus: the Redis bus, presence and shared counters, and a close that takes the node off', async () => {
    const options = resolveOptions(['--store', 'postgres://x@y/z', '--bus', url!, '--node-id', `oc-${process.pid}`], {});
    const c = await openCluster(options, log);
    const d = await openCluster({ ...options, nodeId: `oc2-${process.pid}` }, log);
    try {
      expect(c.bus).toBeInstanceOf(RedisBus);
      expect(c.bus.up).toBe(true);
      const user = 900_000_000 + (process.pid % 1000);
      expect(await c.presence!.userConnected(user)).toBe(true);
      expect(await d.presence!.isOnline(user)).toBe(true);
      const t = c.loginThrottle('name', 1, 60_000)!;
      expect(await t.reserve(`oc-${process.pid}`, Date.now())).toBe(true);
      t.release(`oc-${process.pid}`);
      await c.close();
      expect(await d.presence!.isOnline(user)).toBe(false);
    } finally {
      await d.close();
    }
  });
});
