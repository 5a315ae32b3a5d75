/**
 * The inbox's retention (DELIVERY.md section 1): every few seconds, drops
 * received entries outside the window, past the newest `--inbox-retain` of
 * each user appended to (or marked received) since the last sweep, and
 * older than `--inbox-max-age` (a bounded batch per sweep, by index).
 * Entries no connection has received yet are never dropped: the store's
 * statements skip them.
 */
import type { Logger } from 'pino';
import type { InboxData } from '../store/inbox-data.ts';

const SWEEP_MS = 2000;
/** Entries dropped by age per statement, and statements per sweep. */
const EXPIRE_BATCH = 1000;
const EXPIRE_ROUNDS = 10;

export type RetentionSettings = { retain(): number; maxAgeMs(): number };

export class InboxRetention {
  readonly #data: InboxData;
  readonly #settings: RetentionSettings;
  readonly #log: Logger;
  /** Runs store work the inbox's close waits for. */
  readonly #track: <T>(p: Promise<T>) => Promise<T>;
  /**
   * Users appended to or marked received since the last sweep, with the
   * highest head seen (0: not known here, a mark's; the sweep reads it).
   */
  #touched = new Map<number, number>();
  /** Whether the sweeps have looked at every stream once since the start (entries may have left the window while the server was down). */
  #seeded = false;
  #timer: NodeJS.Timeout | undefined;
  #sweeping = false;
  #last: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(data: InboxData, settings: RetentionSettings, log: Logger, track: <T>(p: Promise<T>) => Promise<T>) {
    this.#data = data;
    this.#settings = settings;
    this.#log = log;
    this.#track = track;
  }

  /** The user's stream reached `head` (an append here), or 0: entries were marked received, the sweep reads the head. */
  touched(userId: number, head = 0): void {
    const known = this.#touched.get(userId);
    if (known === undefined || head > known) this.#touched.set(userId, head);
  }

  start(): void {
    this.#timer = setInterval(() => {
      if (!this.#sweeping) void this.sweep();
    }, SWEEP_MS);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** No more sweeps at all (the one running, if any, still ends: the inbox's close waits for it). */
  close(): void {
    this.stop();
    this.#closed = true;
  }

  /** One sweep, after the one running; sweeps run one after the other. */
  sweep(now = Date.now()): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#sweeping = true;
    const run = this.#track(this.#last.then(() => this.#sweepOnce(now)));
    this.#last = run;
    void run.then(() => {
      if (this.#last === run) this.#sweeping = false;
    });
    return run;
  }

  async #sweepOnce(now: number): Promise<void> {
    const dirty = this.#touched;
    this.#touched = new Map();
    try {
      const retain = this.#settings.retain();
      // the first sweep: every stream past the window (a crash before a sweep, or a smaller --inbox-retain since)
      if (!this.#seeded) {
        for (const [userId, head] of await this.#data.streamsPast(retain)) dirty.set(userId, Math.max(head, dirty.get(userId) ?? 0));
        this.#seeded = true;
      }
      const unknown = [...dirty].filter(([, head]) => head === 0).map(([userId]) => userId);
      if (unknown.length > 0) for (const [userId, head] of await this.#data.heads(unknown)) dirty.set(userId, head);
      const bounds = new Map<number, number>();
      for (const [userId, head] of dirty) if (head > retain) bounds.set(userId, head - retain);
      await this.#data.trim(bounds);
      const before = now - this.#settings.maxAgeMs();
      // an age reaching back before 1970 drops nothing (and is no bigint PostgreSQL takes)
      if (before > 0) for (let i = 0; i < EXPIRE_ROUNDS && (await this.#data.expire(before, EXPIRE_BATCH)) === EXPIRE_BATCH; i++);
    } catch (err) {
      for (const [userId, head] of dirty) this.touched(userId, head);
      this.#log.warn({ err: (err as Error).message }, 'inbox retention sweep failed; will retry');
    }
  }
}
