/**
 * One inbox connection's stream (DELIVERY.md section 3): after `resume` it
 * writes the user's entries as `inbox,<seq>,<fields...>` in seq order, with
 * no gap and no repeat, first the retained ones read from the store, then
 * live ones as their commits are published.
 *
 * One pump per connection: a live entry that is next in line is written at
 * once; one further ahead waits in a small buffer while the pump reads the
 * missing ones from the store (a replay, or a commit whose publication is
 * still on its way); one already written is dropped. Reads from the store
 * are paged and, like a mailbox drain, written only as the client reads
 * them (at most `window()` unread bytes at a time), so a long replay never
 * trips the slow-consumer bound by itself.
 */
import type { Logger } from 'pino';
import { OutFrame } from './out-frame.ts';
import type { Session } from './session.ts';
import { KIND_ENTRY, pageBytes, type EntryPage, type InboxRow } from '../store/inbox-data.ts';
import { bulkDone, bulkTurn, bulkTurnNow, rowBytes, type BulkClaim } from './bulk-turns.ts';

/** Entries read from the store at a time while a stream catches up (and at most about window() bytes of them). */
const PAGE = 256;
/** How long a gap in live entries may wait for its missing publication before the store is asked. */
const GAP_WAIT_MS = 5;
/** A read the store refused (PostgreSQL restarting) is tried again after this, doubling up to RETRY_MAX_MS. */
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 2000;
/** Live entries a stream may owe a write report at a time (see #owed), and seqs it remembers having reported unwritten (#reported). */
const OWED_MAX = 1024;
const REPORTED_MAX = 4096;
/** Runs of a stream (one per start) whose written seqs it remembers, for an entry whose publication comes late. */
const RUNS_KEPT = 8;

/** One committed inbox entry, its frames formatted once however many connections get it. */
export class InboxEntry {
  readonly userId: number;
  readonly seq: number;
  readonly kind: number;
  /** 1 when it was stored as not yet received by any connection. */
  readonly pending: number;
  readonly payload: string;
  #inbox: OutFrame | undefined;
  #plain: OutFrame | undefined;

  constructor(userId: number, row: InboxRow) {
    this.userId = userId;
    this.seq = Number(row.seq);
    this.kind = Number(row.kind);
    this.pending = Number(row.pending);
    this.payload = row.payload;
  }

  /** `inbox,<seq>,<fields...>`: the payload's fields are escaped already. */
  get inboxFrame(): OutFrame {
    return (this.#inbox ??= new OutFrame(`inbox,${this.seq},${this.payload}`));
  }

  /** The version 1 form: the fields alone. */
  get plainFrame(): OutFrame {
    return (this.#plain ??= new OutFrame(this.payload));
  }

  /** Written to a connection, it stops being "not yet received". */
  get holdsMailbox(): boolean {
    return this.kind === KIND_ENTRY && this.pending === 1;
  }
}

export type StreamDeps = {
  /** Durable read of the user's retained entries with seq > after, oldest first: at most `limit` and a bounded number of bytes (pageBytes); `more` when it stopped at a bound. */
  read(userId: number, after: number, limit: number): Promise<EntryPage>;
  /** A pending entry was written to this connection. */
  received(userId: number, seq: number): void;
  /** Unread bytes a catch-up may leave queued at a time. */
  window(): number;
  log: Logger;
};

type Written = (err?: Error | null) => void;

export class InboxStream {
  readonly session: Session;
  readonly #deps: StreamDeps;
  #userId = 0;
  #streaming = false;
  /** The seq this connection gets next. */
  #next = 1;
  /** Bumped by every stop: a catch-up that started before it quits. */
  #generation = 0;
  #filling = false;
  /** A catch-up asked while a fill ran: it reads the store to its end once more before it ends. */
  #again = false;
  /** Live entries ahead of #next, by seq. */
  readonly #buffer = new Map<number, InboxEntry>();
  /**
   * The write callbacks of live entries this stream took (offer said true)
   * but has not written yet, by seq: queued in the buffer, or to be read
   * from the store. Called once the entry is written, or with an error when
   * the stream stops first, so an entry stored as delivered live that no
   * connection got is kept for the next version 1 login after all.
   */
  readonly #owed = new Map<number, Written>();
  /**
   * Seqs of live entries this stream reported it did not take or write
   * (their publisher may be marking them not yet received): a restarted
   * stream that writes one after all marks it received again, whatever the
   * row it read still said, or a version 1 login would get it a second time.
   * Oldest first, at most REPORTED_MAX.
   */
  readonly #reported = new Set<number>();
  /** Where the current run started (the first seq it writes), and the seqs the last few runs wrote, [from, to). */
  #runFrom = 1;
  #runs: { from: number; to: number }[] = [];
  #bufferedBytes = 0;
  /** Catch-up bytes written but not yet taken by the kernel. */
  #unsettled = 0;
  #wake: (() => void) | undefined;
  #waiters: { seq: number; resolve: () => void }[] = [];
  /** Entries written so far, and whether a catch-up waits for the client to read: what whenWritten's patience looks at. */
  #writes = 0;
  #blocked = false;

  constructor(session: Session, deps: StreamDeps) {
    this.session = session;
    this.#deps = deps;
  }

  get streaming(): boolean {
    return this.#streaming;
  }

  /** Streams the user's entries with seq > after. */
  start(userId: number, after: number): void {
    this.stop();
    if (userId !== this.#userId) {
      this.#runs = [];
      this.#reported.clear();
    }
    this.#userId = userId;
    this.#streaming = true;
    this.#next = after + 1;
    this.#runFrom = after + 1;
    void this.#fill(false);
  }

  /** Whether a recent run of this stream (before the current one) wrote `seq`. */
  #wroteBefore(seq: number): boolean {
    return this.#runs.some((run) => seq >= run.from && seq < run.to);
  }

  /** Until the next start, nothing more is written. */
  stop(): void {
    if (!this.#streaming) return;
    this.#streaming = false;
    if (this.#next > this.#runFrom) {
      this.#runs.push({ from: this.#runFrom, to: this.#next });
      if (this.#runs.length > RUNS_KEPT) this.#runs.shift();
    }
    this.#generation++;
    this.#again = false;
    this.#buffer.clear();
    this.#bufferedBytes = 0;
    this.#failOwed(() => true, true);
    this.#wake?.();
    for (const w of this.#waiters.splice(0)) w.resolve();
  }

  #report(seq: number): void {
    this.#reported.add(seq);
    if (this.#reported.size > REPORTED_MAX) this.#reported.delete(this.#reported.values().next().value!);
  }

  /** The owed writes that will not happen (the stream stopped, or retention dropped them): their entries were not written here. */
  #failOwed(which: (seq: number) => boolean, report: boolean): void {
    for (const [seq, written] of this.#owed) {
      if (!which(seq)) continue;
      this.#owed.delete(seq);
      if (report) this.#report(seq);
      written(new Error('the inbox stream stopped before this entry was written'));
    }
  }

  /**
   * A committed entry of the user, as published. True when this connection
   * has it or will get it (written now: `written` follows the write; queued,
   * or already written: `written` is not called); false when it will not.
   */
  offer(entry: InboxEntry, written?: Written): boolean {
    if (!this.#streaming) {
      // between a stop and the next start (a resume restarting the stream): that start's replay may write it yet
      if (written !== undefined && entry.userId === this.#userId) this.#report(entry.seq);
      return false;
    }
    if (entry.seq < this.#next) {
      if (entry.seq >= this.#runFrom || this.#wroteBefore(entry.seq)) return true;
      // before where this run started (resume,,latest), and no recent run wrote it: this connection never got it
      if (written !== undefined) this.#report(entry.seq);
      return false;
    }
    if (!this.#filling && entry.seq === this.#next) return this.#write(entry, written);
    if (written !== undefined && !this.#owed.has(entry.seq)) {
      // far behind (a replay the client reads slowly, or not at all): reported unwritten at once, so the callbacks
      // kept stay bounded; written later after all, it is marked received again (#reported)
      if (this.#owed.size < OWED_MAX) this.#owed.set(entry.seq, written);
      else {
        this.#report(entry.seq);
        written(new Error('the inbox stream is too far behind to owe this entry'));
      }
    }
    if (!this.#buffer.has(entry.seq)) {
      this.#buffer.set(entry.seq, entry);
      this.#bufferedBytes += entry.inboxFrame.size;
      // far behind: the store has them all; keep memory bounded and read them from there
      if (this.#bufferedBytes > this.#deps.window()) {
        this.#buffer.clear();
        this.#bufferedBytes = 0;
      }
    }
    if (!this.#filling) void this.#fill(true);
    return true;
  }

  /** Reads the store to its end now (publications may have been lost): what it lacks is written, nothing twice. */
  catchUp(): void {
    if (!this.#streaming) return;
    if (this.#filling) this.#again = true;
    else void this.#fill(false);
  }

  /**
   * Resolves once every entry up to `seq` was handed to the connection (or
   * the stream stopped), or once the stream went `patienceMs` without
   * writing anything while not waiting for the client to read: a stream
   * held up by the server (the store away) does not hold a reply for ever,
   * but a client that reads slowly gets its entries before the reply, as
   * DELIVERY.md promises, however long it takes.
   */
  whenWritten(seq: number, patienceMs: number): Promise<void> {
    if (!this.#streaming || seq < this.#next) return Promise.resolve();
    return new Promise((resolve) => {
      let seen = this.#writes;
      const done = () => {
        clearInterval(timer);
        resolve();
      };
      const timer = setInterval(() => {
        if (this.#writes === seen && !this.#blocked) done();
        seen = this.#writes;
      }, patienceMs);
      timer.unref();
      this.#waiters.push({ seq, resolve: done });
    });
  }

  #write(entry: InboxEntry, given?: Written, settled?: () => void): boolean {
    // a live entry taken earlier and written now (from the buffer or the store): its publisher learns how it went
    const owed = this.#owed.get(entry.seq);
    this.#owed.delete(entry.seq);
    const written = given ?? owed;
    // the callback keeps only what it needs: holding the entry would keep its payload and formatted frame
    // alive next to the encoded bytes, three copies of every unread byte a replay leaves queued
    const reported = this.#reported.delete(entry.seq);
    const mailbox = entry.holdsMailbox || reported ? { userId: entry.userId, seq: entry.seq } : undefined;
    const ok = this.session.pushFrame(entry.inboxFrame, (err) => {
      if (!err && mailbox !== undefined) this.#deps.received(mailbox.userId, mailbox.seq);
      settled?.();
      written?.(err);
    });
    if (!ok) {
      // not written; an owed entry's publisher counted this connection as reached, so it hears of the failure
      owed?.(new Error('the connection refused the entry'));
      this.stop();
      return false;
    }
    this.#next = entry.seq + 1;
    this.#writes++;
    if (this.#waiters.length > 0) {
      const due = this.#waiters.filter((w) => w.seq < this.#next);
      this.#waiters = this.#waiters.filter((w) => w.seq >= this.#next);
      for (const w of due) w.resolve();
    }
    return true;
  }

  /** A catch-up write: waits for room in the window first. False when the stream stopped meanwhile. */
  async #writeWindowed(entry: InboxEntry, generation: number): Promise<boolean> {
    // measuring and encoding a big entry costs as much as reading it: each takes its turn (bulk-turns.ts)
    const cost = entry.payload.length;
    let claim = bulkTurnNow(cost) ?? (await this.#claim(cost));
    const size = entry.inboxFrame.size;
    const full = () => this.#generation === generation && this.#unsettled > 0 && this.#unsettled + size > this.#deps.window();
    if (full()) {
      // no claim is held while the client reads: it would hold up every other replay
      bulkDone(claim, cost);
      while (full()) {
        this.#blocked = true;
        await new Promise<void>((resolve) => (this.#wake = resolve));
        this.#blocked = false;
      }
      // the encoding happens in the turn the client's read made room in
      claim = bulkTurnNow(cost) ?? (await this.#claim(cost));
    }
    try {
      if (this.#generation !== generation || entry.seq < this.#next) return this.#generation === generation;
      this.#unsettled += size;
      const ok = this.#write(entry, undefined, () => {
        this.#unsettled -= size;
        this.#wake?.();
      });
      if (!ok) this.#unsettled -= size;
      return ok && this.#generation === generation;
    } finally {
      bulkDone(claim, cost);
    }
  }

  /** Waits for a turn with bulk budget left (the server busy, not the client: whenWritten waits on). */
  async #claim(bytes: number): Promise<BulkClaim> {
    this.#blocked = true;
    try {
      return await bulkTurn(bytes);
    } finally {
      this.#blocked = false;
    }
  }

  #dropWritten(): void {
    for (const [seq, e] of this.#buffer) {
      if (seq < this.#next) {
        this.#buffer.delete(seq);
        this.#bufferedBytes -= e.inboxFrame.size;
      }
    }
  }

  #lowestBuffered(): number {
    let low = Infinity;
    for (const seq of this.#buffer.keys()) if (seq < low) low = seq;
    return low;
  }

  /**
   * Writes what is next in line until nothing is missing: buffered entries
   * in order, and whatever lies before them (or, on a start, everything up
   * to the store's end) read from the store.
   */
  async #fill(gap: boolean): Promise<void> {
    this.#filling = true;
    const generation = this.#generation;
    const alive = () => this.#generation === generation;
    let readToEnd = !gap;
    try {
      if (gap) await new Promise((resolve) => setTimeout(resolve, GAP_WAIT_MS));
      while (alive()) {
        for (let e = this.#buffer.get(this.#next); e !== undefined && alive(); e = this.#buffer.get(this.#next)) {
          this.#buffer.delete(e.seq);
          this.#bufferedBytes -= e.inboxFrame.size;
          if (!(await this.#writeWindowed(e, generation))) return;
        }
        this.#dropWritten();
        if (this.#again) {
          this.#again = false;
          readToEnd = true;
        }
        if (!alive() || (this.#buffer.size === 0 && !readToEnd)) return;
        // Every seq below a published one is committed too (seqs follow commit
        // order), so what the store lacks below `known` was dropped by retention.
        const known = this.#lowestBuffered();
        // a page is tens of milliseconds of the one thread when its entries are big: many replays take turns (bulk-turns.ts)
        const page = await this.#read(alive);
        if (page === undefined || !alive()) return;
        for (const row of page.rows) {
          const entry = new InboxEntry(this.#userId, row);
          if (entry.seq < this.#next) continue;
          if (entry.seq > this.#next) this.#skipped(entry.seq);
          if (!(await this.#writeWindowed(entry, generation))) return;
        }
        readToEnd = page.more;
        if (known !== Infinity && this.#next < known && !readToEnd) this.#skipped(known);
      }
    } catch (err) {
      // not the store (#read waits that out): a fault here; the client resumes again later (its connection stays)
      this.#deps.log.warn({ err: (err as Error).message, user: this.#userId }, 'inbox stream stopped');
      if (alive()) this.stop();
    } finally {
      if (alive() || !this.#streaming) this.#filling = false;
    }
  }

  /**
   * The page after #next - 1, however long the store takes to come back: a
   * stream that stopped on a failed read would leave its connection open
   * and silent, and nothing tells the client to resume (a catch-up after a
   * Redis restart while PostgreSQL restarts, a gap just as it went away).
   * Live entries meanwhile wait in the bounded buffer. Undefined once the
   * stream stopped.
   */
  async #read(alive: () => boolean): Promise<EntryPage | undefined> {
    for (let wait = RETRY_MIN_MS; ; wait = Math.min(RETRY_MAX_MS, wait * 2)) {
      // a claim for each try, given back before a pause (bulk-turns.ts)
      const claim = await this.#claim(pageBytes(this.#deps.window()));
      if (!alive()) {
        bulkDone(claim, 0);
        return undefined;
      }
      try {
        const page = await this.#deps.read(this.#userId, this.#next - 1, PAGE);
        bulkDone(claim, rowBytes(page.rows));
        return page;
      } catch (err) {
        bulkDone(claim, 0);
        if (!alive()) return undefined;
        if (wait === RETRY_MIN_MS) this.#deps.log.warn({ err: (err as Error).message, user: this.#userId }, 'inbox stream cannot read the store; trying again');
        await new Promise((resolve) => setTimeout(resolve, wait).unref());
        if (!alive()) return undefined;
      }
    }
  }

  #skipped(to: number): void {
    this.#deps.log.warn({ user: this.#userId, from: this.#next, to }, 'inbox entries left the retention window during a replay: skipped');
    this.#next = to;
    this.#failOwed((seq) => seq < to, false);
  }
}
