import argon2 from 'argon2';
import { randomBytes } from 'node:crypto';
import { CommandError } from './errors.ts';

export type HashParams = { memoryKiB: number; time: number; parallelism: number };

/**
 * argon2id hashing behind a bounded queue: at most `concurrency` hashes run
 * at once (each holds `memoryKiB` of memory and a libuv thread), at most
 * `queueLimit` wait; past that a request is refused with `too_many_attempts`
 * instead of letting memory and latency grow without bound.
 */
export class PasswordHasher {
  readonly params: HashParams;
  readonly #concurrency: number;
  readonly #queueLimit: number;
  #running = 0;
  readonly #waiting: (() => void)[] = [];
  #dummyHash: Promise<string> | undefined;

  constructor(params: HashParams, concurrency: number, queueLimit: number) {
    this.params = params;
    this.#concurrency = concurrency;
    this.#queueLimit = queueLimit;
  }

  get queueLength(): number {
    return this.#waiting.length;
  }

  hash(password: string): Promise<string> {
    return this.#run(() =>
      argon2.hash(password, {
        type: argon2.argon2id,
        memoryCost: this.params.memoryKiB,
        timeCost: this.params.time,
        parallelism: this.params.parallelism,
      }),
    );
  }

  /** Verifies; `hash` undefined verifies against a dummy so unknown users cost the same. */
  async verify(hash: string | undefined, password: string): Promise<boolean> {
    if (hash === undefined) {
      this.#dummyHash ??= this.hash(randomBytes(16).toString('hex'));
      const dummy = await this.#dummyHash;
      await this.#run(() => argon2.verify(dummy, password));
      return false;
    }
    return this.#run(() => argon2.verify(hash, password));
  }

  /** True when the hash was made under other parameters than the current ones. */
  needsRehash(hash: string): boolean {
    return argon2.needsRehash(hash, {
      memoryCost: this.params.memoryKiB,
      timeCost: this.params.time,
      parallelism: this.params.parallelism,
    });
  }

  async #run<T>(job: () => Promise<T>): Promise<T> {
    if (this.#running >= this.#concurrency) {
      if (this.#waiting.length >= this.#queueLimit) {
        throw new CommandError('too_many_attempts', 'the server is busy hashing passwords; try again later');
      }
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else {
      this.#running++;
    }
    try {
      return await job();
    } finally {
      const next = this.#waiting.shift();
      if (next !== undefined) next();
      else this.#running--;
    }
  }
}

/** Failures per key inside a sliding window; `blocked` once `limit` are reached. */
export class FailureCounter {
  readonly #limit: number;
  readonly #windowMs: number;
  readonly #entries = new Map<string, { count: number; last: number; first: number }>();

  constructor(limit: number, windowMs: number) {
    this.#limit = limit;
    this.#windowMs = windowMs;
  }

  blocked(key: string, now: number): boolean {
    const e = this.#entries.get(key);
    if (e === undefined) return false;
    if (now - e.last >= this.#windowMs) {
      this.#entries.delete(key);
      return false;
    }
    return e.count >= this.#limit;
  }

  fail(key: string, now: number): void {
    const e = this.#entries.get(key);
    if (e === undefined || now - e.first >= this.#windowMs && e.count < this.#limit) {
      this.#entries.set(key, { count: 1, last: now, first: now });
    } else {
      e.count++;
      e.last = now;
    }
  }

  reset(key: string): void {
    this.#entries.delete(key);
  }

  /** Drops entries whose window has passed; called by the server's sweep. */
  sweep(now: number): void {
    for (const [key, e] of this.#entries) if (now - e.last >= this.#windowMs) this.#entries.delete(key);
  }
}
