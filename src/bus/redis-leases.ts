/**
 * Short leases in Redis (Bus.lease), so a piece of work runs on one node of
 * the cluster at a time (a user's mailbox drain). `SET <name> <token> NX PX
 * <ttl>` takes one; while it is held a script renews it every third of its
 * TTL (and takes it again if Redis lost the key, restarted empty); a
 * compare-and-delete script gives it back, so a node never removes a lease
 * that lapsed and was taken by another. A node that dies without a word
 * holds its leases at most one TTL. The token is the node id and a counter:
 * readable with `redis-cli GET`, and different for every grant.
 *
 * Redis unreachable: the lease is granted anyway (the work done twice beats
 * the work left undone), with at most one warning per WARN_MS.
 */
import type { Logger } from 'pino';
import type { Lease } from './bus.ts';
import { Script, type RedisClient } from './redis-client.ts';

/** KEYS: the lease. ARGV: token, ttl ms. 1 renewed (or taken again: the key was gone), 0 held by another. */
const RENEW = new Script(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`);

/** KEYS: the lease. ARGV: token. Deletes it only while it is still this grant's. */
const RELEASE = new Script(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

const WARN_MS = 10_000;

export class RedisLeases {
  readonly #redis: RedisClient;
  readonly #nodeId: string;
  readonly #log: Logger;
  readonly #ttlMs: number;
  #grants = 0;
  #lastWarn = -Infinity;
  #unwarned = 0;
  /** Leases granted without asking Redis because it could not be reached, for tests and metrics. */
  unasked = 0;

  constructor(redis: RedisClient, nodeId: string, log: Logger, ttlMs: number) {
    this.#redis = redis;
    this.#nodeId = nodeId;
    this.#log = log;
    this.#ttlMs = ttlMs;
  }

  async take(name: string): Promise<Lease | undefined> {
    const token = `${this.#nodeId}:${++this.#grants}`;
    try {
      const reply = await this.#redis.set(name, token, { condition: 'NX', expiration: { type: 'PX', value: this.#ttlMs } });
      if (reply !== 'OK') return undefined;
    } catch (err) {
      this.unasked++;
      this.#warn(err, name, 'lease not taken: Redis unreachable; the work goes on without it');
    }
    return new HeldLease(this, name, token, this.#ttlMs);
  }

  /** @internal for HeldLease */
  renew(name: string, token: string): Promise<boolean> {
    return RENEW.run(this.#redis, [name], [token, this.#ttlMs]).then((n) => Number(n) === 1);
  }

  /** @internal for HeldLease */
  release(name: string, token: string): void {
    // lost with the connection: it lapses on its own within the TTL
    RELEASE.run(this.#redis, [name], [token]).catch(() => {});
  }

  /** @internal at most one line per WARN_MS, with the count held back */
  warn(err: unknown, name: string, msg: string): void {
    this.#warn(err, name, msg);
  }

  #warn(err: unknown, name: string, msg: string): void {
    const now = performance.now();
    if (now - this.#lastWarn < WARN_MS) {
      this.#unwarned++;
      return;
    }
    this.#lastWarn = now;
    this.#log.warn({ lease: name, err: String(err), ...(this.#unwarned > 0 ? { suppressed: this.#unwarned } : {}) }, msg);
    this.#unwarned = 0;
  }
}

class HeldLease implements Lease {
  readonly #leases: RedisLeases;
  readonly #name: string;
  readonly #token: string;
  readonly #timer: NodeJS.Timeout;
  readonly #lost: (() => void)[] = [];
  #done = false;

  constructor(leases: RedisLeases, name: string, token: string, ttlMs: number) {
    this.#leases = leases;
    this.#name = name;
    this.#token = token;
    this.#timer = setInterval(() => this.#renew(), Math.max(1, Math.floor(ttlMs / 3)));
    this.#timer.unref();
  }

  #renew(): void {
    this.#leases.renew(this.#name, this.#token).then(
      (held) => {
        if (held || this.#done) return;
        this.#done = true;
        clearInterval(this.#timer);
        for (const fn of this.#lost.splice(0)) fn();
      },
      // Redis unreachable: kept, as when it could not be taken
      (err: unknown) => {
        if (!this.#done) this.#leases.warn(err, this.#name, 'lease not renewed: Redis unreachable; the work goes on');
      },
    );
  }

  release(): void {
    if (this.#done) return;
    this.#done = true;
    clearInterval(this.#timer);
    this.#leases.release(this.#name, this.#token);
  }

  onLost(fn: () => void): void {
    if (!this.#done) this.#lost.push(fn);
  }
}
