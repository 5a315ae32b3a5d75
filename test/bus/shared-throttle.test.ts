/** Login throttling shared through Redis: two "nodes" (two connections) counting the same keys. */
import pino from 'pino';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { FailureCounter } from '../../src/core/passwords.ts';
import { closeClient, connectInBackground, newRedisClient, type RedisClient } from '../../src/bus/redis-client.ts';
import { SharedFailureCounter, type LoginThrottle } from '../../src/bus/shared-throttle.ts';
import { redisBin, startRedis, type Redis } from '../../tools/redis.ts';
import { eventually } from '../helpers/eventually.ts';

const url = inject('redisUrl');
const log = pino({ level: 'silent' });
const clients: RedisClient[] = [];
let n = 0;

// the in-memory counter Users holds today is a LoginThrottle, so either plugs in
const inMemory: LoginThrottle = new FailureCounter(5, 60_000);
void inMemory;

async function client(redisUrl = url!): Promise<RedisClient> {
  const c = newRedisClient(redisUrl, { role: 'commands', failWhileDown: true }, log);
  await connectInBackground(c, 2000);
  clients.push(c);
  return c;
}

/** Two nodes' counters of one scope (a scope no other test uses). */
async function pair(limit: number, windowMs = 60_000): Promise<[SharedFailureCounter, SharedFailureCounter]> {
  const scope = `test-${process.pid}-${++n}`;
  const make = async () => new SharedFailureCounter({ redis: await client(), scope, limit, windowMs, log });
  return [await make(), await make()];
}

afterEach(async () => {
  await Promise.all(clients.splice(0).map(closeClient));
});

describe.skipIf(url === undefined)('SharedFailureCounter', () => {
  it('failures on one node count on the other', async () => {
    const [a, b] = await pair(3);
    for (const node of [a, b, a]) {
      expect(await node.reserve('ann', Date.now())).toBe(true);
      node.fail('ann', Date.now());
    }
    expect(await b.reserve('ann', Date.now())).toBe(false);
    expect(await a.reserve('ann', Date.now())).toBe(false);
    // another key is untouched
    expect(await b.reserve('bob', Date.now())).toBe(true);
  });

  it('a burst spread over two nodes checks at most `limit` attempts', async () => {
    const [a, b] = await pair(3);
    const taken: SharedFailureCounter[] = [];
    const attempts = Array.from({ length: 10 }, (_, i) => {
      const node = i % 2 === 0 ? a : b;
      return Promise.resolve(node.reserve('key', Date.now())).then((ok) => {
        // each attempt taken is a wrong password
        if (ok) {
          taken.push(node);
          node.fail('key', Date.now());
        }
        return ok;
      });
    });
    const results = await Promise.all(attempts);
    expect(results.filter(Boolean)).toHaveLength(3);
    expect(taken).toHaveLength(3);
  });

  it('an attempt waits while those in flight may fill the limit, and is taken when one is released', async () => {
    const [a, b] = await pair(2);
    expect(await a.reserve('k', Date.now())).toBe(true);
    expect(await b.reserve('k', Date.now())).toBe(true);
    let third: boolean | undefined;
    const waiting = Promise.resolve(b.reserve('k', Date.now())).then((ok) => (third = ok));
    a.release('k');
    await waiting;
    expect(third).toBe(true);
  });

  it('waiters are refused when the attempts in flight fail', async () => {
    const [a, b] = await pair(2);
    expect(await a.reserve('k', Date.now())).toBe(true);
    expect(await a.reserve('k', Date.now())).toBe(true);
    const waiting = b.reserve('k', Date.now());
    a.fail('k', Date.now());
    a.fail('k', Date.now());
    expect(await waiting).toBe(false);
  });

  it('a success forgets the failures; a key is refused until the window has passed since the last failure', async () => {
    const [a, b] = await pair(2, 400);
    expect(await a.reserve('k', Date.now())).toBe(true);
    a.fail('k', Date.now());
    expect(await b.reserve('k', Date.now())).toBe(true);
    b.release('k');
    b.reset('k');
    for (let i = 0; i < 2; i++) {
      expect(await a.reserve('k', Date.now())).toBe(true);
      a.fail('k', Date.now());
    }
    expect(await b.reserve('k', Date.now())).toBe(false);
    await eventually(async () => {
      const ok = await b.reserve('k', Date.now());
      if (ok) b.release('k');
      expect(ok).toBe(true);
    }, 3000);
  });
});

describe.skipIf(redisBin() === undefined)('SharedFailureCounter without Redis', () => {
  let redis: Redis | undefined;
  afterEach(async () => {
    await redis?.stop();
    redis = undefined;
  });

  it('counts on this node alone: never unthrottled, never failing the login', async () => {
    redis = await startRedis();
    const c = await client(redis.url);
    const t = new SharedFailureCounter({ redis: c, scope: 'down', limit: 2, windowMs: 60_000, log });
    await redis.kill();
    await eventually(() => expect(c.isReady).toBe(false));
    for (let i = 0; i < 2; i++) {
      expect(await t.reserve('k', Date.now())).toBe(true);
      t.fail('k', Date.now());
    }
    expect(await t.reserve('k', Date.now())).toBe(false);
    expect(t.errors).toBeGreaterThan(0);
  });
});
