/**
 * In a cluster: a room's messages go to this node's connections in id
 * order, whichever nodes they were said on. A node pushes its own says at
 * once but hears the others' over the bus, so without this a message said
 * here right after one said elsewhere (the sayer's next `say` went to this
 * node, say) reached members here first, and a client that catches up with
 * `history,<room>,after,<newest id seen>` after a reconnect missed the one
 * still on its way.
 *
 * Each message carries the id of the room's message before it (`prev`,
 * read under the room's lock, so the chain is exact). One whose
 * predecessor this node has not pushed yet waits for it, at most `holdMs`:
 * past that it goes out anyway (the predecessor's push was lost with a
 * Redis restart, or this node heard nothing of the room for a while, with
 * no member connected here; `history` has it), and a predecessor that
 * comes later still goes out, late, rather than never.
 */
type Waiting = { id: number; push: () => void; pushed: () => void };
type RoomState = { last: number | undefined; waiting: Map<number, Waiting>; timer: NodeJS.Timeout | undefined };

export class RoomOrder {
  readonly #rooms = new Map<string, RoomState>();
  readonly #holdMs: number;

  constructor(holdMs: number) {
    this.#holdMs = holdMs;
  }

  /** Pushes message `id` of `room` (whose predecessor is `prev`, 0 for none) in its turn; resolves once pushed. */
  deliver(room: string, id: number, prev: number, push: () => void): Promise<void> {
    let state = this.#rooms.get(room);
    if (state === undefined) this.#rooms.set(room, (state = { last: undefined, waiting: new Map(), timer: undefined }));
    // the first message heard here, or its predecessor already out (or given up on): its turn
    if (state.last === undefined || prev <= state.last) {
      this.#push(state, id, push);
      this.#follow(state);
      return Promise.resolve();
    }
    const mine = state;
    return new Promise((resolve) => {
      mine.waiting.set(prev, { id, push, pushed: resolve });
      mine.timer ??= setTimeout(() => this.#giveUp(room, mine), this.#holdMs);
    });
  }

  /** Forgets every room (the module is set up again). */
  clear(): void {
    for (const state of this.#rooms.values()) this.#giveUpNow(state);
    this.#rooms.clear();
  }

  #push(state: RoomState, id: number, push: () => void): void {
    push();
    if (state.last === undefined || id > state.last) state.last = id;
  }

  /** Pushes the waiting messages whose predecessor is now out, in chain order. */
  #follow(state: RoomState): void {
    for (let next = state.waiting.get(state.last!); next !== undefined; next = state.waiting.get(state.last!)) {
      state.waiting.delete(state.last!);
      this.#push(state, next.id, next.push);
      next.pushed();
    }
    if (state.waiting.size === 0 && state.timer !== undefined) {
      clearTimeout(state.timer);
      state.timer = undefined;
    }
  }

  /** A predecessor did not come in time: what waits goes out in id order. */
  #giveUp(room: string, state: RoomState): void {
    state.timer = undefined;
    if (this.#rooms.get(room) !== state) return;
    this.#giveUpNow(state);
  }

  #giveUpNow(state: RoomState): void {
    if (state.timer !== undefined) clearTimeout(state.timer);
    state.timer = undefined;
    const waiting = [...state.waiting.values()].sort((a, b) => a.id - b.id);
    state.waiting.clear();
    for (const w of waiting) {
      this.#push(state, w.id, w.push);
      w.pushed();
    }
  }
}
