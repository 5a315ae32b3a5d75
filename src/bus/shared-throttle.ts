/**
 * Login throttling shared by the nodes of a cluster (CLUSTER.md): the
 * failure counters of PROTOCOL.md in Redis, so ten guesses spread over three
 * nodes count as ten. Same rules and same interface as the in-memory
 * FailureCounter (src/core/passwords.ts), which Users holds twice (per name,
 * per address):
 *
 * - an attempt is reserved before its hash is computed, so a burst of
 *   concurrent guesses cannot all pass before the first failure counts:
 *   with `count` failures and `inFlight` attempts, a new one is refused once
 *   count reaches the limit and waits while count + inFlight does;
 * - a failure starts or extends the window; a key stays refused until the
 *   window has passed since its last failure; a success forgets the failures.
 *
 * Each step is one Lua script (atomic on Redis, timed by Redis's clock so
 * the nodes' clocks do not matter). An attempt in flight is a lease in a
 * sorted set that lapses after `leaseMs`, so a node killed mid-attempt does
 * not hold a key's place for ever. A waiting attempt asks again with
 * back-off (Redis has no wake-up to give). While Redis is unreachable the
 * node falls back to its own in-memory counter: throttled per node, as
 * without --bus, never unthrottled and never failing the login because of
 * Redis.
 *
 * Keys: ts:login:<scope>:<key> (hash: count, first, last; expires a window
 * after the last failure) and ts:login:<scope>:<key>:f (the leases).
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { FailureCounter } from '../core/passwords.ts';
import { Script, type RedisClient } from './redis-client.ts';

/** What Users needs of a failure counter; FailureCounter (in memory) and SharedFailureCounter (Redis) both are one. */
export interface LoginThrottle {
  /** Takes one attempt: true when taken (settle it with fail() or release()), false when refused; may wait for attempts in flight. */
  reserve(key: string, now: number): boolean | Promise<boolean>;
  /** A reserved attempt that did not fail: gives it back. */
  release(key: string): void;
  /** A reserved attempt failed: it becomes a failure. */
  fail(key: string, now: number): void;
  /** Forgets the failures (a successful login); attempts in flight stay counted. */
  reset(key: string): void;
  /** Drops what has expired; called by the server's sweep. */
  sweep(now: number): void;
}

const NOW_MS = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

/** KEYS: counts, leases. ARGV: limit, window ms, lease ms, token. Returns 1 taken, 0 refused, 2 wait. */
const RESERVE = new Script(`${NOW_MS}
local limit, window, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local count = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
if count > 0 and now - last >= window then
  redis.call('DEL', KEYS[1])
  count = 0
end
if count >= limit then return 0 end
if count + redis.call('ZCARD', KEYS[2]) < limit then
  redis.call('ZADD', KEYS[2], now + lease, ARGV[4])
  redis.call('PEXPIRE', KEYS[2], lease)
  return 1
end
return 2
`);

/** KEYS: counts, leases. ARGV: limit, window ms, token ('' when none was reserved). */
const FAIL = new Script(`${NOW_MS}
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[2], ARGV[3]) end
local count = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
local first = tonumber(redis.call('HGET', KEYS[1], 'first') or '0')
if count == 0 or (now - first >= window and count < limit) then
  count = 1
  first = now
else
  count = count + 1
end
redis.call('HSET', KEYS[1], 'count', count, 'first', first, 'last', now)
redis.call('PEXPIRE', KEYS[1], window)
return count
`);

/** A reservation held in memory because Redis could not be reached when it was made. */
const LOCAL = Symbol('local');
type Hold = string | typeof LOCAL;

/** Attempts of one key that may wait on this node before more are refused outright (as in FailureCounter). */
const MAX_WAITING = 1000;

export type SharedThrottleOptions = {
  redis: RedisClient;
  /** Names this counter's keys apart from the other's: `name` or `ip`. */
  scope: string;
  limit: number;
  windowMs: number;
  /** How long an attempt may stay in flight before its place lapses; default 30 s. */
  leaseMs?: number;
  log: Logger;
};

export class SharedFailureCounter implements LoginThrottle {
  readonly #redis: RedisClient;
  readonly #scope: string;
  readonly #limit: number;
  readonly #windowMs: number;
  readonly #leaseMs: number;
  readonly #log: Logger;
  /** Used while Redis is unreachable. */
  readonly #fallback: FailureCounter;
  /** Per key, the reservations this node holds (any one settles: they are alike). */
  readonly #held = new Map<string, Hold[]>();
  readonly #waiting = new Map<string, number>();
  /** Redis answered with an error or not at all, for metrics. */
  errors = 0;

  constructor(options: SharedThrottleOptions) {
    this.#redis = options.redis;
    this.#scope = options.scope;
    this.#limit = options.limit;
    this.#windowMs = options.windowMs;
    this.#leaseMs = options.leaseMs ?? 30_000;
    this.#log = options.log;
    this.#fallback = new FailureCounter(options.limit, options.windowMs);
  }

  /** `now` is used only by the in-memory fallback: in Redis the scripts read Redis's clock. */
  async reserve(key: string, now: number): Promise<boolean> {
    const token = randomBytes(9).toString('base64url');
    let delay = 20;
    const deadline = performance.now() + this.#leaseMs;
    for (;;) {
      let answer: number;
      try {
        answer = Number(await RESERVE.run(this.#redis, this.#keys(key), [this.#limit, this.#windowMs, this.#leaseMs, token]));
      } catch (err) {
        this.#failed(err);
        const taken = await this.#fallback.reserve(key, now);
        if (taken) this.#hold(key, LOCAL);
        return taken;
      }
      if (answer === 1) {
        this.#hold(key, token);
        return true;
      }
      if (answer === 0) return false;
      // attempts in flight may still fail and fill the limit: wait for them to settle, as FailureCounter does
      const waiting = this.#waiting.get(key) ?? 0;
      if (waiting >= MAX_WAITING || performance.now() + delay > deadline) return false;
      this.#waiting.set(key, waiting + 1);
      await new Promise((r) => setTimeout(r, delay));
      const left = (this.#waiting.get(key) ?? 1) - 1;
      if (left === 0) this.#waiting.delete(key);
      else this.#waiting.set(key, left);
      delay = Math.min(delay * 2, 250);
    }
  }

  release(key: string): void {
    const hold = this.#take(key);
    if (hold === LOCAL) {
      this.#fallback.release(key);
      return;
    }
    if (hold === undefined) return;
    // if this is lost, the lease lapses on its own
    this.#redis.zRem(this.#keys(key)[1]!, hold).catch((err: unknown) => this.#failed(err));
  }

  fail(key: string, now: number): void {
    const hold = this.#take(key);
    if (hold === LOCAL) {
      this.#fallback.fail(key, now);
      return;
    }
    FAIL.run(this.#redis, this.#keys(key), [this.#limit, this.#windowMs, hold ?? '']).catch((err: unknown) => {
      this.#failed(err);
      // counted here at least: refused on this node as without --bus
      this.#fallback.fail(key, now);
    });
  }

  reset(key: string): void {
    this.#fallback.reset(key);
    this.#redis.del(this.#keys(key)[0]!).catch((err: unknown) => this.#failed(err));
  }

  sweep(now: number): void {
    this.#fallback.sweep(now);
  }

  #keys(key: string): [string, string] {
    const base = `ts:login:${this.#scope}:${key}`;
    return [base, `${base}:f`];
  }

  #hold(key: string, hold: Hold): void {
    const list = this.#held.get(key);
    if (list === undefined) this.#held.set(key, [hold]);
    else list.push(hold);
  }

  #take(key: string): Hold | undefined {
    const list = this.#held.get(key);
    if (list === undefined) return undefined;
    const hold = list.pop();
    if (list.length === 0) this.#held.delete(key);
    return hold;
  }

  #failed(err: unknown): void {
    this.errors++;
    this.#log.debug({ err: String(err) }, 'shared login throttle: Redis unreachable, this node counts alone');
  }
}
