/**
 * Effects in arrival order for work that commits concurrently: each call's
 * work (a store transaction) starts at once, so commits still share group
 * commits, but its effect (updating the membership index, pushing to the
 * room) runs only after the effects of every earlier call for the same key.
 * So two members joining a room at once see each other's joins exactly as
 * if one had joined first, and a room's pushes go out in request order.
 */
export class InOrder<K> {
  readonly #tails = new Map<K, Promise<void>>();

  async run<T>(key: K, work: () => Promise<T>, effect: (result: T) => void): Promise<T> {
    const before = this.#tails.get(key) ?? Promise.resolve();
    let done!: () => void;
    const mine = new Promise<void>((resolve) => (done = resolve));
    this.#tails.set(key, mine);
    try {
      const result = await work();
      await before;
      effect(result);
      return result;
    } finally {
      await before;
      done();
      if (this.#tails.get(key) === mine) this.#tails.delete(key);
    }
  }
}
