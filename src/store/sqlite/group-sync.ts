/**
 * Group commit for SQLite: the writing connection commits with
 * `synchronous = OFF` (a COMMIT is a write() into the WAL, no fsync), and
 * this class makes those commits durable with one fsync of the WAL file on
 * libuv's thread pool for everything committed before it started. Commits
 * that arrive while an fsync runs share the next one, so commits per second
 * stay near what the disk can fsync while writes per second grow with
 * concurrency; the event loop never waits for the disk.
 */
import { fdatasync } from 'node:fs';

type Waiter = { readonly upTo: number; resolve(): void; reject(err: Error): void };

export class GroupSync {
  readonly #fd: number;
  /** Commits made so far, and how many of them are known durable. */
  #committed = 0;
  #durable = 0;
  #running = false;
  readonly #waiters: Waiter[] = [];
  readonly stats = { fsyncs: 0, commits: 0 };
  readonly #onFailure: (err: Error) => void;

  constructor(walFd: number, onFailure: (err: Error) => void) {
    this.#fd = walFd;
    this.#onFailure = onFailure;
  }

  /** Called right after a COMMIT: counts it. */
  committed(): void {
    this.#committed++;
    this.stats.commits++;
  }

  /** Resolves once every commit made so far is on disk; rejects when the fsync fails. */
  durable(): Promise<void> {
    const upTo = this.#committed;
    if (this.#durable >= upTo) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.#waiters.push({ upTo, resolve, reject });
      this.#start();
    });
  }

  #start(): void {
    if (this.#running || this.#waiters.length === 0) return;
    this.#running = true;
    const upTo = this.#committed;
    this.stats.fsyncs++;
    // fdatasync: the WAL's data and its size, without the inode's times (what SQLite itself uses on Linux)
    fdatasync(this.#fd, (err) => {
      this.#running = false;
      if (err === null) this.#durable = Math.max(this.#durable, upTo);
      else this.#onFailure(err);
      // waiters covered by this fsync are answered; later ones wait for the next
      let kept = 0;
      for (const w of this.#waiters) {
        if (w.upTo > upTo) this.#waiters[kept++] = w;
        else if (err === null) w.resolve();
        else w.reject(err);
      }
      this.#waiters.length = kept;
      this.#start();
    });
  }
}
