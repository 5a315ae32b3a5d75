/**
 * In a cluster: which of a user's inbox seqs this node has dealt with for
 * its version 1 connections, so that a recovery after lost publications
 * (the bus came back) writes each missing entry, live or stored, to those
 * connections once, and nothing they already got (inbox.ts #recoverUser).
 *
 * Per user with a version 1 connection here: `upTo`, the seq up to which
 * every entry was either heard (its doorbell, a local append, a recovery)
 * or committed before the user's first login here (not meant for these
 * connections: version 1 gets live entries only while logged in); and the
 * seqs above it heard out of order (two nodes' doorbells crossing, or one
 * lost). `upTo` is the stream's head read after the login's subscription
 * was active: what commits after it is either heard or lost, and what was
 * heard before it is at most it. Until that read returns, heard seqs are
 * kept in `above` and folded in then.
 */

type Heard = { upTo: number | undefined; above: Set<number>; ready: Promise<void> };

export class HeardSeqs {
  readonly #byUser = new Map<number, Heard>();

  /** A version 1 login of the user: `head` reads the stream's head (after the login's subscription); the first one read sets upTo. */
  track(userId: number, head: Promise<number | undefined>): void {
    let heard = this.#byUser.get(userId);
    if (heard === undefined) this.#byUser.set(userId, (heard = { upTo: undefined, above: new Set(), ready: Promise.resolve() }));
    const mine = heard;
    const based = head.then((h) => {
      if (h === undefined || this.#byUser.get(userId) !== mine || mine.upTo !== undefined) return;
      mine.upTo = h;
      this.#fold(mine);
    });
    // no values kept: a user logging in again and again while another connection stays adds nothing that lasts
    heard.ready = Promise.all([heard.ready, based]).then(() => undefined);
  }

  /** Resolves once every head read of a login so far returned (a recovery starts from a known upTo). */
  ready(userId: number): Promise<void> {
    return this.#byUser.get(userId)?.ready ?? Promise.resolve();
  }

  /** Where a recovery starts reading; undefined when unknown (no version 1 login here, or its read failed). */
  upTo(userId: number): number | undefined {
    return this.#byUser.get(userId)?.upTo;
  }

  /** How many seqs wait above upTo for the ones before them (a lasting gap means a doorbell was lost). */
  gapSize(userId: number): number {
    return this.#byUser.get(userId)?.above.size ?? 0;
  }

  has(userId: number, seq: number): boolean {
    const heard = this.#byUser.get(userId);
    if (heard === undefined) return false;
    return (heard.upTo !== undefined && seq <= heard.upTo) || heard.above.has(seq);
  }

  hear(userId: number, seq: number): void {
    const heard = this.#byUser.get(userId);
    if (heard === undefined || (heard.upTo !== undefined && seq <= heard.upTo)) return;
    heard.above.add(seq);
    if (heard.upTo !== undefined) while (heard.above.delete(heard.upTo + 1)) heard.upTo++;
  }

  /** A recovery read the store to `seq`: everything up to it is dealt with (what it lacks left the retention window). */
  settle(userId: number, seq: number): void {
    const heard = this.#byUser.get(userId);
    if (heard === undefined || heard.upTo === undefined || seq <= heard.upTo) return;
    heard.upTo = seq;
    this.#fold(heard);
  }

  /** The user's last connection here went. */
  drop(userId: number): void {
    this.#byUser.delete(userId);
  }

  #fold(heard: Heard): void {
    if (heard.upTo === undefined) return;
    for (const seq of heard.above) if (seq <= heard.upTo) heard.above.delete(seq);
    while (heard.above.delete(heard.upTo + 1)) heard.upTo++;
  }
}
