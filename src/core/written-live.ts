/**
 * Entries stored as "not yet received" that this node wrote live to version
 * 1 connections anyway: in a cluster, the node that appends an entry sees
 * only its own connections, so an entry for a user connected only to other
 * nodes is stored pending, and the nodes holding the user's connections
 * write it to all of them at once (inbox.ts `remote`). Until the received
 * mark of such an entry commits, a mailbox drain (mailbox-drain.ts) may
 * still read it as pending: it skips the connections recorded here, so no
 * connection is written an entry twice. Records go when the mark commits
 * (and no drain page read before that is still being written), or with
 * the connection.
 */
import type { Session } from './session.ts';

export class WrittenLive {
  /** user id → seq → the connections it was written to. */
  readonly #byUser = new Map<number, Map<number, Set<Session>>>();

  add(userId: number, seq: number, session: Session): void {
    let seqs = this.#byUser.get(userId);
    if (seqs === undefined) this.#byUser.set(userId, (seqs = new Map()));
    let sessions = seqs.get(seq);
    if (sessions === undefined) seqs.set(seq, (sessions = new Set()));
    sessions.add(session);
  }

  has(userId: number, seq: number, session: Session): boolean {
    return this.#byUser.get(userId)?.get(seq)?.has(session) ?? false;
  }

  /** Their received marks committed: no drain reads them any more. */
  forget(userId: number, seqs: readonly number[]): void {
    const bySeq = this.#byUser.get(userId);
    if (bySeq === undefined) return;
    for (const seq of seqs) bySeq.delete(seq);
    if (bySeq.size === 0) this.#byUser.delete(userId);
  }

  /** The connection stopped being the user: what a mark that failed left here goes with it. */
  dropSession(userId: number, session: Session): void {
    const bySeq = this.#byUser.get(userId);
    if (bySeq === undefined) return;
    for (const [seq, sessions] of bySeq) if (sessions.delete(session) && sessions.size === 0) bySeq.delete(seq);
    if (bySeq.size === 0) this.#byUser.delete(userId);
  }
}
