/**
 * Runs async work one at a time per key, in call order: a check and the
 * write it decides on (and the pushes that follow) are never interleaved
 * with another call for the same key. Friends key it by pair, so crossing
 * requests and repeated accepts see each other's results.
 */
export class OneAtATime<K> {
  readonly #tails = new Map<K, Promise<void>>();

  async run<T>(key: K, work: () => Promise<T>): Promise<T> {
    const before = this.#tails.get(key) ?? Promise.resolve();
    let done!: () => void;
    const mine = new Promise<void>((resolve) => (done = resolve));
    this.#tails.set(key, mine);
    try {
      await before;
      return await work();
    } finally {
      done();
      if (this.#tails.get(key) === mine) this.#tails.delete(key);
    }
  }
}
