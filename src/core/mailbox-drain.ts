/**
 * PROTOCOL.md section 3 for version 1 connections: after a login's `ok`,
 * the user's inbox entries that no connection has received yet (never
 * carbons) go out oldest first, in their version 1 form, and are marked
 * received only once written to the connection. They are read a page at a
 * time and pushed as the kernel takes them, like any other traffic, so a
 * big mailbox is never all in memory and never outruns the outbound bound
 * by itself. One drain per user at a time, so nothing goes out twice; a
 * drain cut short (its connection went away) is taken over by another
 * version 1 connection of the user. In a cluster "one at a time" holds
 * across nodes: a drain runs under the user's lease on the bus (Bus.lease);
 * a node that cannot take it writes nothing and tries again every
 * LEASE_RETRY_MS while it holds a version 1 connection of the user, so what
 * the holder leaves pending (its connection closed, its node died and the
 * lease lapsed) still goes out. Without a cluster there is no lease. An entry this node already wrote live
 * to the draining connection (written-live.ts) is marked, not written again.
 */
import type { Logger } from 'pino';
import { InboxEntry } from './inbox-stream.ts';
import type { UserRef } from './module-api.ts';
import type { Session } from './session.ts';
import { pageBytes, type InboxData, type InboxRow } from '../store/inbox-data.ts';
import type { WrittenLive } from './written-live.ts';
import { bulkDone, bulkTurn, rowBytes } from './bulk-turns.ts';
import type { Lease } from '../bus/bus.ts';

/** An entry a drain is writing to `session`. */
export type Drained = (userId: number, seq: number, session: Session) => void;

/** Takes the user's drain lease: undefined while another node holds it. */
export type TakeLease = (userId: number) => Lease | undefined | Promise<Lease | undefined>;

/** Stored messages read from the store at a time while a mailbox drains. */
const DRAIN_PAGE = 64;
/** A read or mark the store refused (PostgreSQL restarting) is tried again after this, doubling up to RETRY_MAX_MS. */
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 2000;
/** A drain whose lease another node holds asks again after this (a lease lapses 5 s after its node died). */
const LEASE_RETRY_MS = 500;

export class MailboxDrains {
  readonly #data: InboxData;
  readonly #log: Logger;
  readonly #window: () => number;
  /** The version 1 connections of a user that may take over a drain. */
  readonly #heirs: (userId: number) => Session[];
  /** Registers store work the store's close waits for. */
  readonly #track: (work: Promise<unknown>) => void;
  /** The session draining each user's mailbox. */
  readonly #draining = new Map<number, Session>();
  /** How to stop a session's drain. */
  readonly #stops = new Map<Session, () => void>();
  /** Users whose running drain must look again before it ends. */
  readonly #poked = new Set<number>();
  /** Entries written live to connections on this node while still stored as pending. */
  readonly #live: WrittenLive;
  /** Users with a page of pending entries read and not yet all written (by their drain, or a recovery: inbox.ts), how many, and what waits for them to end. */
  readonly #pages = new Map<number, { open: number; waiting: (() => void)[] }>();
  /** In a cluster: how a drain takes its user's lease. */
  readonly #lease: TakeLease | undefined;
  /** Users whose drain waits for the lease (being asked, or held by another node), with the connection asked for. */
  readonly #waiting = new Map<number, { session: Session; timer: NodeJS.Timeout | undefined }>();
  /** In a cluster: told of every entry a drain writes, so the doorbell or recovery that comes for it later skips that connection. */
  readonly #drained: Drained | undefined;

  constructor(
    data: InboxData,
    log: Logger,
    window: () => number,
    heirs: (userId: number) => Session[],
    track: (work: Promise<unknown>) => void,
    live: WrittenLive,
    lease?: TakeLease,
    drained?: Drained,
  ) {
    this.#lease = lease;
    this.#drained = drained;
    this.#data = data;
    this.#track = track;
    this.#log = log;
    this.#window = window;
    this.#heirs = heirs;
    this.#live = live;
  }

  /** The connection the user's mailbox drains to on this node, if a drain runs. */
  drainingTo(userId: number): Session | undefined {
    return this.#draining.get(userId);
  }

  /**
   * Runs `fn` once no page of the user's drain that was read before now is
   * still being written: a received mark that committed before `fn` runs
   * may have been read as pending by that page, not by any later one.
   */
  afterPage(userId: number, fn: () => void): void {
    const pages = this.#pages.get(userId);
    if (pages === undefined) fn();
    else pages.waiting.push(fn);
  }

  /** A page of the user's pending entries is about to be read: afterPage waits until closePage. */
  openPage(userId: number): void {
    const pages = this.#pages.get(userId);
    if (pages === undefined) this.#pages.set(userId, { open: 1, waiting: [] });
    else pages.open++;
  }

  /** Every entry of the page opened is written (or skipped). */
  closePage(userId: number): void {
    const pages = this.#pages.get(userId);
    if (pages === undefined || --pages.open > 0) return;
    this.#pages.delete(userId);
    for (const fn of pages.waiting) fn();
  }

  /** Starts draining the user's mailbox to `session` unless a drain of it runs already. */
  start(session: Session, user: UserRef): void {
    if (!this.#draining.has(user.id) && !this.#waiting.has(user.id)) this.#leased(session, user);
  }

  /** Entries were stored for the user: a running drain reads once more before it ends; otherwise one starts on a version 1 connection, if any. */
  ensure(user: UserRef): void {
    if (this.#draining.has(user.id)) {
      this.#poked.add(user.id);
      return;
    }
    // waiting for the lease: the drain it leads to reads everything pending then
    if (this.#waiting.has(user.id)) return;
    const heir = this.#heirs(user.id).at(-1);
    if (heir !== undefined) this.#leased(heir, user);
  }

  /** Drains to `session` once this node holds the user's lease: at once without a cluster. */
  #leased(session: Session, user: UserRef): void {
    if (this.#lease === undefined) {
      this.#drain(session, user);
      return;
    }
    const taken = this.#lease(user.id);
    if (!(taken instanceof Promise)) {
      this.#granted(session, user, taken);
      return;
    }
    const waiting = { session, timer: undefined };
    this.#waiting.set(user.id, waiting);
    void taken.then((lease) => {
      if (this.#waiting.get(user.id) === waiting) this.#waiting.delete(user.id);
      this.#granted(session, user, lease);
    });
  }

  /** The lease was asked for: drain to the connection asked for, or else the user's latest version 1 one; none left, or the lease is another node's: ask again later while one is here. */
  #granted(session: Session, user: UserRef, lease: Lease | undefined): void {
    const heirs = this.#heirs(user.id);
    const to = heirs.includes(session) ? session : heirs.at(-1);
    if (to === undefined || this.#draining.has(user.id) || this.#waiting.has(user.id)) {
      lease?.release();
      return;
    }
    if (lease !== undefined) {
      this.#drain(to, user, lease);
      return;
    }
    const waiting: { session: Session; timer: NodeJS.Timeout | undefined } = { session: to, timer: undefined };
    waiting.timer = setTimeout(() => {
      if (this.#waiting.get(user.id) !== waiting) return;
      this.#waiting.delete(user.id);
      this.#leased(waiting.session, user);
    }, LEASE_RETRY_MS);
    waiting.timer.unref();
    this.#waiting.set(user.id, waiting);
  }

  /** Stops the session's drain (another connection of the user takes over the rest). */
  stop(session: Session): void {
    this.#stops.get(session)?.();
  }

  #drain(session: Session, user: UserRef, lease?: Lease): void {
    let stopped = false;
    let wake: (() => void) | undefined;
    const stop = () => {
      stopped = true;
      wake?.();
    };
    // another node took the lease (this one could not renew it in time): it drains from here
    lease?.onLost(stop);
    this.#draining.set(user.id, session);
    this.#stops.set(session, stop);
    this.#poked.delete(user.id);
    const window = { unsettled: 0, pending: 0, written: [] as number[] };
    const settled = () => new Promise<void>((resolve) => (wake = resolve));
    // exactly the entries written, not a range: on PostgreSQL a lower seq can commit after a higher one was read
    const markWritten = async () => {
      if (window.written.length === 0) return;
      const seqs = window.written;
      window.written = [];
      const marked = await this.#retrying(
        () => this.#data.markReceived(new Map([[user.id, seqs]])),
        user,
        () => stopped,
      );
      if (marked === undefined) {
        // the drain stopped before the store came back: still pending, so a drain to this connection
        // (it logs in again) would read them again; it marks them instead of writing them twice.
        // A closed connection gets nothing again: nothing to record (it would only be kept for ever).
        if (session.open) for (const seq of seqs) this.#live.add(user.id, seq, session);
        return;
      }
      // this drain's next read starts after the commit: it will not read them again
      this.#live.forget(user.id, seqs);
    };
    let pageOpen = false;
    const endPage = () => {
      if (!pageOpen) return;
      pageOpen = false;
      this.closePage(user.id);
    };
    const run = async () => {
      let after = 0;
      while (!stopped) {
        if (!pageOpen) {
          pageOpen = true;
          this.openPage(user.id);
        }
        const read = await this.#retrying(
          async () => {
            // drains of big stored messages take turns with everyone else (bulk-turns.ts); no claim held in a retry's pause
            const claim = await bulkTurn(pageBytes(this.#window()));
            let rows: InboxRow[] = [];
            try {
              rows = await this.#data.durableRead((db) => this.#data.pendingAfter(db, user.id, after, DRAIN_PAGE, pageBytes(this.#window())));
              return rows;
            } finally {
              bulkDone(claim, rowBytes(rows));
            }
          },
          user,
          () => stopped,
        );
        if (read === undefined) break;
        const rows = read.value;
        if (rows.length === 0) {
          endPage();
          if (!this.#poked.delete(user.id)) break;
          continue;
        }
        for (const row of rows) {
          const entry = new InboxEntry(user.id, row);
          if (this.#live.has(user.id, entry.seq, session)) {
            // written live to this connection already (its mark is on its way): marked with the page, not written again
            window.written.push(entry.seq);
            after = entry.seq;
            continue;
          }
          const frame = entry.plainFrame;
          while (!stopped && window.unsettled > 0 && window.unsettled + frame.size > this.#window()) await settled();
          if (stopped) break;
          const size = frame.size;
          window.unsettled += size;
          window.pending++;
          this.#drained?.(user.id, entry.seq, session);
          const ok = session.pushFrame(frame, (err) => {
            if (!err) window.written.push(entry.seq);
            window.unsettled -= size;
            window.pending--;
            wake?.();
          });
          if (!ok) {
            window.unsettled -= size;
            window.pending--;
            stopped = true;
          }
          after = entry.seq;
        }
        // a page's entries are marked once every write of it has settled
        while (window.pending > 0) await settled();
        await markWritten();
        endPage();
      }
      while (window.pending > 0) await settled();
      await markWritten();
    };
    let failed = false;
    const work = run()
      .catch((err: unknown) => {
        failed = true;
        this.#log.warn({ err: (err as Error).message, user: user.name }, 'mailbox drain stopped; the rest stays stored');
      })
      .finally(() => {
        endPage();
        if (this.#draining.get(user.id) === session) this.#draining.delete(user.id);
        if (this.#stops.get(session) === stop) this.#stops.delete(session);
        const poked = this.#poked.delete(user.id);
        // poked after its last read: once more, to the same connection (what was left to the drain went live to the others only)
        if (poked && !stopped && !failed) {
          this.#drain(session, user, lease);
          return;
        }
        lease?.release();
        // cut short (or failed and poked, as before): another version 1 connection of the user takes over the rest
        if (poked || stopped) this.ensure(user);
      });
    this.#track(work);
  }

  /**
   * `work` until it succeeds, however long the store takes to come back: a
   * drain that ended on a failed read would leave the connection without
   * its stored messages until the next one arrived. Undefined once the
   * drain stopped (its connection left) without a success.
   */
  async #retrying<T>(work: () => Promise<T>, user: UserRef, stopped: () => boolean): Promise<{ value: T } | undefined> {
    for (let wait = RETRY_MIN_MS; ; wait = Math.min(RETRY_MAX_MS, wait * 2)) {
      try {
        return { value: await work() };
      } catch (err) {
        if (stopped()) return undefined;
        if (wait === RETRY_MIN_MS) this.#log.warn({ err: (err as Error).message, user: user.name }, 'mailbox drain cannot reach the store; trying again');
        await new Promise((resolve) => setTimeout(resolve, wait).unref());
        if (stopped()) return undefined;
      }
    }
  }
}
