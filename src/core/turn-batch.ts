/**
 * Everything added during one event-loop turn, run together once the turn's
 * reads are done (`setImmediate`: after every socket that was readable in
 * the turn has been read). On PostgreSQL, room messages and inbox appends
 * use it: one transaction, one commit and one round trip for what a turn's
 * clients said or sent, instead of one each. (SQLite's store already
 * commits a turn's transactions together.)
 */
type Waiting<I, R> = { item: I; resolve(result: R): void; reject(err: unknown): void };

export class TurnBatch<I, R> {
  #waiting: Waiting<I, R>[] = [];
  readonly #run: (items: I[]) => Promise<R[]>;

  /** `run` returns one result per item, in the items' order; when it throws, every item fails with that error. */
  constructor(run: (items: I[]) => Promise<R[]>) {
    this.#run = run;
  }

  add(item: I): Promise<R> {
    if (this.#waiting.length === 0) setImmediate(() => void this.#flush());
    return new Promise<R>((resolve, reject) => this.#waiting.push({ item, resolve, reject }));
  }

  async #flush(): Promise<void> {
    const batch = this.#waiting;
    this.#waiting = [];
    try {
      const results = await this.#run(batch.map((w) => w.item));
      for (const [i, w] of batch.entries()) w.resolve(results[i]!);
    } catch (err) {
      for (const w of batch) w.reject(err);
    }
  }
}
