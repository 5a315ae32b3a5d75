import argon2 from 'argon2';
import { randomBytes } from 'node:crypto';
import { CommandError } from './errors.ts';

export type HashParams = { memoryKiB: number; time: number; parallelism: number };

/**
 * argon2id hashing behind a bounded queue: at most `concurrency` hashes run
 * at once (each holds `memoryKiB` of memory and a libuv thread), at most
 * `queueLimit` wait; past that a request is refused with `too_many_attempts`
 * instead of letting memory and latency grow without bound.
 *
 * The queue is fair between client addresses: waiting hashes are started
 * round-robin, one address's at a time, and one address may hold at most an
 * eighth of the queue. One anonymous client pipelining 1,500 registrations
 * over one HTTP connection had filled it in first-come order: every other
 * login waited 19 s behind it, or was refused.
 */
export class PasswordHasher {
  readonly params: HashParams;
  readonly #concurrency: number;
  readonly #queueLimit: number;
  readonly #perAddress: number;
  #running = 0;
  /** Waiting starts by address, in round-robin order (an address goes to the back once one of its own starts). */
  readonly #waiting = new Map<string, (() => void)[]>();
  #waitingCount = 0;
  #dummyHash: Promise<string> | undefined;

  constructor(params: HashParams, concurrency: number, queueLimit: number) {
    this.params = params;
    this.#concurrency = concurrency;
    this.#queueLimit = queueLimit;
    this.#perAddress = Math.max(1, Math.ceil(queueLimit / 8));
  }

  get queueLength(): number {
    return this.#waitingCount;
  }

  /** `address`: the client's, for the fair share (hashes made for the server itself have none). */
  hash(password: string, address = ''): Promise<string> {
    return this.#run(
      () =>
        argon2.hash(password, {
          type: argon2.argon2id,
          memoryCost: this.params.memoryKiB,
          timeCost: this.params.time,
          parallelism: this.params.parallelism,
        }),
      address,
    );
  }

  /** Verifies; `hash` undefined verifies against a dummy so unknown users cost the same. */
  async verify(hash: string | undefined, password: string, address = ''): Promise<boolean> {
    if (hash === undefined) {
      this.#dummyHash ??= this.hash(randomBytes(16).toString('hex'));
      const dummy = await this.#dummyHash;
      await this.#run(() => argon2.verify(dummy, password), address);
      return false;
    }
    return this.#run(() => argon2.verify(hash, password), address);
  }

  /** True when the hash was made under other parameters than the current ones. */
  needsRehash(hash: string): boolean {
    return argon2.needsRehash(hash, {
      memoryCost: this.params.memoryKiB,
      timeCost: this.params.time,
      parallelism: this.params.parallelism,
    });
  }

  async #run<T>(job: () => Promise<T>, address: string): Promise<T> {
    if (this.#running >= this.#concurrency) {
      const mine = this.#waiting.get(address);
      if (this.#waitingCount >= this.#queueLimit || (mine?.length ?? 0) >= this.#perAddress) {
        throw new CommandError('too_many_attempts', 'the server is busy hashing passwords; try again later');
      }
      await new Promise<void>((resolve) => {
        if (mine === undefined) this.#waiting.set(address, [resolve]);
        else mine.push(resolve);
        this.#waitingCount++;
      });
    } else {
      this.#running++;
    }
    try {
      return await job();
    } finally {
      const next = this.#next();
      if (next !== undefined) next();
      else this.#running--;
    }
  }

  /** The next waiting start: the first of the address whose turn it is, which then goes to the back. */
  #next(): (() => void) | undefined {
    const first = this.#waiting.entries().next();
    if (first.done === true) return undefined;
    const [address, starts] = first.value;
    const next = starts.shift()!;
    this.#waitingCount--;
    this.#waiting.delete(address);
    if (starts.length > 0) this.#waiting.set(address, starts);
    return next;
  }
}

type Entry = { count: number; inFlight: number; last: number; first: number; waiting: ((ok: boolean) => void)[] };

/** Attempts that may wait for one key before more are refused outright. */
const MAX_WAITING = 1000;

/**
 * Failed logins per key inside a window, plus the attempts still being
 * checked. An attempt is reserved before its hash is computed, so a burst of
 * concurrent guesses cannot all pass the check before the first failure is
 * counted: with `count` failures and `inFlight` attempts, a new one is
 * refused once `count` reaches `limit`, and waits while `count + inFlight`
 * does (it may be refused when those settle as failures). So at most
 * `limit` attempts are ever checked per window, and a burst of genuine
 * logins from one address (a NAT) is queued, not refused. A refused key
 * stays refused until the window has passed since its last failure.
 */
export class FailureCounter {
  readonly #limit: number;
  readonly #windowMs: number;
  readonly #entries = new Map<string, Entry>();

  constructor(limit: number, windowMs: number) {
    this.#limit = limit;
    this.#windowMs = windowMs;
  }

  /** Number of keys tracked. */
  get size(): number {
    return this.#entries.size;
  }

  /** True when a new attempt would be refused at once. */
  blocked(key: string, now: number): boolean {
    const e = this.#current(key, now);
    return e !== undefined && e.count >= this.#limit;
  }

  /**
   * Takes one attempt for `key`: true when taken (settle it with fail() or
   * release()), false when refused; a promise when it must wait for the
   * attempts in flight to settle.
   */
  reserve(key: string, now: number): boolean | Promise<boolean> {
    const e = this.#current(key, now);
    if (e === undefined) {
      this.#entries.set(key, { count: 0, inFlight: 1, last: now, first: now, waiting: [] });
      return true;
    }
    if (e.count >= this.#limit || e.waiting.length >= MAX_WAITING) return false;
    if (e.count + e.inFlight < this.#limit && e.waiting.length === 0) {
      e.inFlight++;
      return true;
    }
    return new Promise((resolve) => e.waiting.push(resolve));
  }

  /** A reserved attempt that did not fail (or was never checked): gives it back. */
  release(key: string): void {
    const e = this.#entries.get(key);
    if (e === undefined) return;
    if (e.inFlight > 0) e.inFlight--;
    this.#settle(key, e);
  }

  /** A reserved attempt failed: it becomes a failure. */
  fail(key: string, now: number): void {
    let e = this.#entries.get(key);
    if (e === undefined) {
      e = { count: 0, inFlight: 0, last: now, first: now, waiting: [] };
      this.#entries.set(key, e);
    } else if (e.inFlight > 0) {
      e.inFlight--;
    }
    if (e.count === 0 || (now - e.first >= this.#windowMs && e.count < this.#limit)) {
      e.count = 1;
      e.first = now;
    } else {
      e.count++;
    }
    e.last = now;
    this.#settle(key, e);
  }

  /** Forgets the failures (a successful login); attempts in flight stay counted. */
  reset(key: string): void {
    const e = this.#entries.get(key);
    if (e === undefined) return;
    e.count = 0;
    this.#settle(key, e);
  }

  /** Drops entries whose window has passed; called by the server's sweep. */
  sweep(now: number): void {
    for (const [key, e] of this.#entries) {
      if (e.inFlight === 0 && e.waiting.length === 0 && now - e.last >= this.#windowMs) this.#entries.delete(key);
    }
  }

  /** After an attempt settled: wakes waiters that now fit, refuses them all once the limit is reached. */
  #settle(key: string, e: Entry): void {
    while (e.waiting.length > 0) {
      if (e.count >= this.#limit) {
        for (const wake of e.waiting.splice(0)) wake(false);
        break;
      }
      if (e.count + e.inFlight >= this.#limit) break;
      e.inFlight++;
      e.waiting.shift()!(true);
    }
    if (e.count === 0 && e.inFlight === 0 && e.waiting.length === 0) this.#entries.delete(key);
  }

  /** The key's entry, its failures forgotten once the window has passed since the last one. */
  #current(key: string, now: number): Entry | undefined {
    const e = this.#entries.get(key);
    if (e === undefined || e.count === 0 || now - e.last < this.#windowMs) return e;
    e.count = 0;
    if (e.inFlight === 0 && e.waiting.length === 0) {
      this.#entries.delete(key);
      return undefined;
    }
    return e;
  }
}
