import { CommandError } from './errors.ts';

export type BudgetOptions = { userRate: number; userRateBurst: number; userBytes: number; userBytesBurst: number };

type Bucket = { requests: number; bytes: number; at: number };

/** Users with a bucket at once; past it, full buckets are dropped, then all (the budget fails open, memory stays bounded). */
const MAX_USERS = 100_000;

/**
 * Two token buckets per logged-in user, shared by all their connections and
 * the HTTP API: requests per second and payload bytes per second, each with
 * a burst. A request is refused with `rate_limited` (nothing charged) while
 * either bucket is empty; a request may take the byte bucket below zero, so
 * one payload larger than the burst still goes through and is paid back
 * before the next. A rate of 0 turns that bucket off. Buckets that have
 * refilled are dropped by the sweep, so memory follows the active users.
 */
export class UserBudget {
  readonly #rate: number;
  readonly #rateBurst: number;
  readonly #bytes: number;
  readonly #bytesBurst: number;
  readonly #buckets = new Map<number, Bucket>();
  /** Requests refused, for metrics and tests. */
  refused = 0;

  constructor(options: BudgetOptions) {
    this.#rate = options.userRate / 1000;
    this.#rateBurst = options.userRateBurst;
    this.#bytes = options.userBytes / 1000;
    this.#bytesBurst = options.userBytesBurst;
  }

  get enabled(): boolean {
    return this.#rate > 0 || this.#bytes > 0;
  }

  /** Users with a bucket that has not refilled yet (or not been swept). */
  get size(): number {
    return this.#buckets.size;
  }

  /** Charges one request of `bytes` payload bytes to the user; throws `rate_limited` when a bucket is empty. */
  charge(userId: number, bytes: number, now = performance.now()): void {
    if (!this.enabled) return;
    const b = this.#refilled(userId, now);
    if (this.#rate > 0 && b.requests < 1) {
      this.refused++;
      throw new CommandError('rate_limited', `over ${this.#rate * 1000} requests a second; retry in ${Math.ceil((1 - b.requests) / this.#rate)} ms`);
    }
    if (this.#bytes > 0 && b.bytes <= 0) {
      this.refused++;
      throw new CommandError('rate_limited', `over ${this.#bytes * 1000} bytes a second; retry in ${Math.ceil((1 - b.bytes) / this.#bytes)} ms`);
    }
    b.requests -= 1;
    b.bytes -= bytes;
  }

  /** Takes `bytes` from the user's byte bucket, below zero if need be, refusing nothing (what the next requests pay back). */
  chargeBytes(userId: number, bytes: number, now = performance.now()): void {
    if (this.#bytes <= 0) return;
    const b = this.#refilled(userId, now);
    b.bytes -= bytes;
  }

  /** The user's bucket, refilled for the time since it was last charged (a new one is full). */
  #refilled(userId: number, now: number): Bucket {
    let b = this.#buckets.get(userId);
    if (b === undefined) {
      if (this.#buckets.size >= MAX_USERS) {
        this.sweep(now);
        if (this.#buckets.size >= MAX_USERS) this.#buckets.clear();
      }
      b = { requests: this.#rateBurst, bytes: this.#bytesBurst, at: now };
      this.#buckets.set(userId, b);
    } else {
      const dt = now - b.at;
      b.at = now;
      b.requests = Math.min(this.#rateBurst, b.requests + dt * this.#rate);
      b.bytes = Math.min(this.#bytesBurst, b.bytes + dt * this.#bytes);
    }
    return b;
  }

  /** Drops the buckets that are full again: an absent bucket is a full one. */
  sweep(now = performance.now()): void {
    for (const [id, b] of this.#buckets) {
      const dt = now - b.at;
      const requestsFull = this.#rate === 0 || b.requests + dt * this.#rate >= this.#rateBurst;
      const bytesFull = this.#bytes === 0 || b.bytes + dt * this.#bytes >= this.#bytesBurst;
      if (requestsFull && bytesFull) this.#buckets.delete(id);
    }
  }
}
