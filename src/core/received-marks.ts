/**
 * Entries written to a connection after their append (a drain, a replay,
 * the HTTP API, another node's version 1 connections) count as received
 * (DELIVERY.md section 3): their marks are collected and committed in one
 * batch per event-loop turn, not one transaction per entry.
 */
import type { Logger } from 'pino';
import type { InboxData } from '../store/inbox-data.ts';

export class ReceivedMarks {
  readonly #data: InboxData;
  readonly #log: Logger;
  /** Runs store work the inbox's close waits for. */
  readonly #track: <T>(p: Promise<T>) => Promise<T>;
  /** Called with each user's seqs once their marks committed. */
  readonly #committed: (userId: number, seqs: readonly number[]) => void;
  #marks = new Map<number, number[]>();
  #flushing = false;
  #closed = false;

  constructor(data: InboxData, log: Logger, track: <T>(p: Promise<T>) => Promise<T>, committed: (userId: number, seqs: readonly number[]) => void) {
    this.#data = data;
    this.#log = log;
    this.#track = track;
    this.#committed = committed;
  }

  add(userId: number, seq: number): void {
    let list = this.#marks.get(userId);
    if (list === undefined) this.#marks.set(userId, (list = []));
    list.push(seq);
    if (!this.#flushing) this.#schedule();
  }

  /** Commits what is waiting, and then no more batches: the inbox's close waits for this last one. */
  close(): void {
    if (this.#marks.size > 0 && !this.#flushing) this.#schedule();
    this.#closed = true;
  }

  /** One batch per event-loop turn; tracked from now, so a close waits for it. */
  #schedule(): void {
    this.#flushing = true;
    void this.#track(new Promise<void>((resolve) => setImmediate(() => void this.#flush().then(resolve))));
  }

  async #flush(): Promise<void> {
    const marks = this.#marks;
    this.#marks = new Map();
    try {
      await this.#data.markReceived(marks);
      for (const [userId, seqs] of marks) this.#committed(userId, seqs);
    } catch (err) {
      // they stay pending: a version 1 login may get them again, nothing is lost
      this.#log.warn({ err: (err as Error).message }, 'could not mark inbox entries received');
    } finally {
      this.#flushing = false;
      if (this.#marks.size > 0 && !this.#closed) this.#schedule();
    }
  }
}
