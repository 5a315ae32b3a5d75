/**
 * The owner's addresses of login throttling (README, "Security and limits"),
 * shared by the nodes of a cluster: the last few addresses a name logged in
 * from, on any node, count that name's failures in a bucket of their own.
 * Kept on one node only, strangers' guesses on the other nodes (the shared
 * counter) would lock the owner out of every node it had not last logged
 * in on. Key: ts:login:trust:<name key>, a list, newest first, forgotten
 * `ttlMs` after the name's last login. While Redis is unreachable the
 * node's own memory answers (as without --bus).
 */
import type { Logger } from 'pino';
import { Script, type RedisClient } from './redis-client.ts';

/** What Users asks of the shared list (its own memory is asked first). */
export interface TrustedAddresses {
  has(key: string, address: string): Promise<boolean>;
  add(key: string, address: string): void;
}

/** KEYS: the list. ARGV: address, how many to keep, ttl ms. */
const ADD = new Script(`
redis.call('LREM', KEYS[1], 0, ARGV[1])
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`);

export class SharedTrustedAddresses implements TrustedAddresses {
  readonly #redis: RedisClient;
  readonly #keep: number;
  readonly #ttlMs: number;
  readonly #log: Logger;

  constructor(options: { redis: RedisClient; keep: number; ttlMs: number; log: Logger }) {
    this.#redis = options.redis;
    this.#keep = options.keep;
    this.#ttlMs = options.ttlMs;
    this.#log = options.log;
  }

  async has(key: string, address: string): Promise<boolean> {
    try {
      return (await this.#redis.lPos(this.#key(key), address)) !== null;
    } catch (err) {
      this.#failed(err);
      return false;
    }
  }

  add(key: string, address: string): void {
    ADD.run(this.#redis, [this.#key(key)], [address, this.#keep, this.#ttlMs]).catch((err: unknown) => this.#failed(err));
  }

  #key(key: string): string {
    return `ts:login:trust:${key}`;
  }

  #failed(err: unknown): void {
    this.#log.debug({ err: String(err) }, "shared owner's addresses: Redis unreachable, this node remembers alone");
  }
}
