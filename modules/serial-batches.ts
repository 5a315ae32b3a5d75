/**
 * One batch in flight per key: items that arrive while a key's batch runs
 * wait and go together in the next one. Rooms use it for `say`: a room's
 * messages take their ids and commit one batch after another, so id order
 * is commit order is push order, while a busy room still shares one commit
 * among everything said during the previous one.
 */
type Waiting<I, R> = { item: I; resolve(result: R): void; reject(err: unknown): void };

export class SerialBatches<K, I, R> {
  readonly #queues = new Map<K, Waiting<I, R>[]>();
  readonly #max: number;
  readonly #run: (key: K, items: I[]) => Promise<R[]>;

  /** `run` returns one result per item, in the items' order. */
  constructor(max: number, run: (key: K, items: I[]) => Promise<R[]>) {
    this.#max = max;
    this.#run = run;
  }

  add(key: K, item: I): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const waiting = { item, resolve, reject };
      const queue = this.#queues.get(key);
      if (queue !== undefined) {
        queue.push(waiting);
        return;
      }
      const fresh = [waiting];
      this.#queues.set(key, fresh);
      void this.#drain(key, fresh);
    });
  }

  async #drain(key: K, queue: Waiting<I, R>[]): Promise<void> {
    while (queue.length > 0) {
      const batch = queue.splice(0, this.#max);
      try {
        const results = await this.#run(
          key,
          batch.map((w) => w.item),
        );
        for (const [i, w] of batch.entries()) w.resolve(results[i]!);
      } catch (err) {
        for (const w of batch) w.reject(err);
      }
    }
    this.#queues.delete(key);
  }
}
