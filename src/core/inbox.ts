/**
 * The inbox service (DELIVERY.md): appends entries durably, publishes them
 * to the user's connections once committed, streams them to inbox
 * connections (`sync`, `resume`), drains the not-yet-received ones to
 * version 1 connections, pages them for HTTP, and keeps retention.
 *
 * Whether an entry is stored as "not yet received" (pending) is decided when
 * it is appended: not when some connection of the user will be written it
 * live (a version 1 connection, or a streaming inbox connection); if every
 * such write then fails, it is marked pending after all. Entries written to
 * any connection later (a drain, a replay, the HTTP API, another node's
 * version 1 connections) are marked received in batches.
 */
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import { CommandError } from './errors.ts';
import { TurnBatch } from './turn-batch.ts';
import { InboxEntry, InboxStream } from './inbox-stream.ts';
import { MailboxDrains } from './mailbox-drain.ts';
import type { CommandContext, InboxApi, InboxPage, SessionApi, UserRef } from './module-api.ts';
import { Session } from './session.ts';
import { formatFields, isFieldsFault, parseFields } from '../text/fields.ts';
import { isDeadlock, KIND_CARBON, KIND_ENTRY, pageBytes, type InboxData, type InboxRow, type NewEntry, type StreamRow } from '../store/inbox-data.ts';
import { drainLease, userChannel, type Bus } from '../bus/bus.ts';
import { WrittenLive } from './written-live.ts';
import { bulkDone, bulkTurn, rowBytes } from './bulk-turns.ts';
import { HeardSeqs } from './heard-seqs.ts';
import { InboxRetention } from './inbox-retention.ts';
import { ReceivedMarks } from './received-marks.ts';

export type InboxSettings = {
  mailboxSize(): number;
  /** Unread bytes a drain or replay may leave queued on a connection. */
  window(): number;
  retain(): number;
  maxAgeMs(): number;
  /** How long a reply may wait for its carbon while the stream writes nothing and does not wait for the client either (the store away). */
  replyWaitMs(): number;
};

/** What the inbox needs of the hub: the user's live connections. */
export type InboxHub = {
  sessionsOf(userId: number): Iterable<Session>;
  readonly stats: { pushed: number; stored: number; lost: number };
  /** In a cluster: committed entries are published with their seq on the user's channel for the other nodes' connections. */
  readonly bus?: Bus | undefined;
};

const MAX_HTTP_LIMIT = 1000;
/** Entries read at a time by a recovery after the bus came back. */
const RECOVER_PAGE = 128;
/** Seqs heard past a gap of a user's doorbells before this node stops waiting for the missing one and reads the store. */
const MAX_GAP = 256;
/** A login's read of the stream head that the store refused is tried again after this, doubling up to 2 s. */
const BASE_RETRY_MS = 100;
const DEFAULT_HTTP_LIMIT = 100;

type Part = { user: UserRef; entries: NewEntry[]; limit: boolean };

type Written = (err?: Error | null) => void;

/** A live entry's writes: how many connections took it (once all are counted), and how many of those failed. */
type LiveTally = { reached: number; failed: number; counted: boolean };

/**
 * A recovery of a user's version 1 connections on this node (#recoverUser).
 * `again`: an entry came meanwhile, so it reads once more before it ends;
 * `local`: live entries appended here meanwhile whose writes to those
 * connections it makes, in seq order (how many connections were due, and
 * the callback that marks the entry pending should every write fail);
 * `arrived`: live entries whose doorbells came meanwhile. Both were for the
 * connections there when they came, whatever those connections' logins read.
 */
type Recovery = { again: boolean; local: Map<number, { count: number; written: Written }>; arrived: Set<number> };

export class Inbox implements InboxApi {
  readonly #data: InboxData;
  readonly #hub: InboxHub;
  readonly #log: Logger;
  readonly #settings: InboxSettings;
  readonly drains: MailboxDrains;
  /** Pending entries written live to version 1 connections here, until their marks commit (a drain skips them there). */
  readonly #writtenLive = new WrittenLive();
  /**
   * In a cluster, the other way round: entries a drain here wrote to a
   * connection before this node dealt with them (their doorbell still on its
   * way, or lost), until the doorbell or a recovery comes and skips that
   * connection; the drain marks them received, so the recovery would read
   * them as live and write them there again.
   */
  readonly #drainedAhead = new WrittenLive();
  /** In a cluster: the seqs of each user with version 1 connections here that this node dealt with, where a recovery after a resubscription starts reading. */
  readonly #heard = new HeardSeqs();
  /** In a cluster: the stream head when each version 1 connection logged in (a live entry lost meanwhile goes to the connections that were logged in at its commit). */
  readonly #since = new WeakMap<Session, number>();
  /** A version 1 login's head, read before its reply (prepareLogin), until the login completes. */
  readonly #prepared = new WeakMap<Session, { userId: number; head: Promise<number | undefined> }>();
  /** Users whose recovery runs. */
  readonly #recovering = new Map<number, Recovery>();
  /** Inbox connections (those that sent `sync`), streaming or not. */
  readonly #streams = new WeakMap<Session, InboxStream>();
  readonly #marks: ReceivedMarks;
  /** "Not received" marks in flight (#lostLive), by user and seq: a received mark of the same entry waits for its commit. */
  readonly #markingPending = new Map<string, Promise<void>>();
  readonly #retention: InboxRetention;
  /** Store work nobody's request waits for (reads of streams and drains, marks, sweeps): the store closes after it. */
  readonly #background = new Set<Promise<unknown>>();
  #closed = false;

  constructor(data: InboxData, hub: InboxHub, log: Logger, settings: InboxSettings) {
    this.#data = data;
    this.#hub = hub;
    this.#log = log;
    this.#settings = settings;
    this.#retention = new InboxRetention(data, settings, log, (p) => this.#track(p));
    // once committed, drains read them as pending no more (once a page read before the commit is written)
    this.#marks = new ReceivedMarks(
      data,
      log,
      (p) => this.#track(p),
      (userId, seqs) => this.drains.afterPage(userId, () => this.#writtenLive.forget(userId, seqs)),
    );
    // received entries (marked here or by a drain) may have left the window already: the next sweep looks at them,
    // from the stream's head (a received seq says nothing of how far the head has gone since)
    data.onReceived = (userIds) => {
      for (const userId of userIds) this.#retention.touched(userId);
    };
    this.drains = new MailboxDrains(
      data,
      log,
      settings.window,
      (id) => [...hub.sessionsOf(id)].filter((s) => !this.#streams.has(s)),
      (p) => void this.#track(p),
      this.#writtenLive,
      // in a cluster, one drain per user on all the nodes together
      hub.bus === undefined ? undefined : (id) => hub.bus!.lease(drainLease(id)),
      // an entry committed after the login whose doorbell (or recovery) has not come yet: that one must skip the connection
      hub.bus === undefined ? undefined : (id, seq, session) => void (this.#heard.has(id, seq) || this.#drainedAhead.add(id, seq, session)),
    );
  }

  isInbox(session: Session): boolean {
    return this.#streams.has(session);
  }

  // ---- connections -----------------------------------------------------

  /** The connection logged in (again): an inbox connection's stream stops until its next resume; a version 1 one drains. */
  loggedIn(session: Session, user: UserRef, again: boolean): void {
    const stream = this.#streams.get(session);
    if (stream !== undefined) stream.stop();
    else if (!again) {
      this.#baseline(session, user.id);
      this.drains.start(session, user);
    }
  }

  /**
   * In a cluster, before a version 1 login's reply (its subscription is
   * active by then, rule 5): reads the user's stream head, so that a
   * recovery knows from where this node may have missed entries
   * (heard-seqs.ts) and which of its connections a lost live entry was for
   * (one committed after the head it read). Read before the reply, so an
   * entry sent once the client has its `ok` always counts as after. Bounded
   * by the reply wait; a read that fails is made again after the login.
   */
  prepareLogin(session: Session, userId: number): Promise<unknown> | undefined {
    if (this.#hub.bus === undefined || this.#streams.has(session) || session.user?.id === userId) return undefined;
    const head = this.#readHead(() => false, userId);
    this.#prepared.set(session, { userId, head });
    return Promise.race([head, new Promise((resolve) => setTimeout(resolve, this.#settings.replyWaitMs()).unref())]);
  }

  /** After a version 1 login: the head read before its reply (or read now), for the recovery's bookkeeping. */
  #baseline(session: Session, userId: number): void {
    if (this.#hub.bus === undefined) return;
    const prepared = this.#prepared.get(session);
    this.#prepared.delete(session);
    const isUser = () => !this.#closed && session.user?.id === userId;
    const head = (prepared?.userId === userId ? prepared.head : Promise.resolve(undefined)).then((h) => h ?? this.#readHead(isUser, userId));
    const based = head.then((h) => {
      if (h !== undefined && session.user?.id === userId) this.#since.set(session, h);
      return h;
    });
    this.#heard.track(userId, this.#track(based));
  }

  /** The user's stream head (0 for none yet), tried again while the store refuses and `keepTrying()` holds; undefined once it does not. */
  async #readHead(keepTrying: () => boolean, userId: number): Promise<number | undefined> {
    for (let wait = BASE_RETRY_MS; ; wait = Math.min(2000, wait * 2)) {
      try {
        const row = await this.#data.durableRead((db) => this.#data.stream(db, userId));
        return row === undefined ? 0 : Number(row.head);
      } catch (err) {
        if (wait === BASE_RETRY_MS) this.#log.warn({ err: (err as Error).message, user: userId }, 'inbox head unreadable at login; trying again');
        await new Promise((resolve) => setTimeout(resolve, wait).unref());
        if (!keepTrying()) return undefined;
      }
    }
  }

  /** The connection stopped being its user (closed, logged out, or logged in as another). */
  loggedOut(session: Session): void {
    this.drains.stop(session);
    if (session.user !== null) {
      const id = session.user.id;
      this.#writtenLive.dropSession(id, session);
      this.#drainedAhead.dropSession(id, session);
      this.#since.delete(session);
      if ([...this.#hub.sessionsOf(id)].every((s) => s === session)) this.#heard.drop(id);
    }
    this.#streams.get(session)?.stop();
  }

  sync(session: SessionApi): void {
    this.#inboxOf(session);
  }

  #inboxOf(session: SessionApi): InboxStream {
    if (!(session instanceof Session)) throw new CommandError('syntax', 'sync and resume need a connection (HTTP: GET /api/inbox)');
    let stream = this.#streams.get(session);
    if (stream === undefined) {
      this.drains.stop(session); // stored frames in version 1 form stop here; another version 1 connection takes over
      stream = new InboxStream(session, {
        read: (userId, after, limit) =>
          this.#track(this.#data.durableRead((db) => this.#data.after(db, userId, after, limit, pageBytes(this.#settings.window())))),
        received: (userId, seq) => this.#received(userId, seq),
        window: this.#settings.window,
        log: this.#log,
      });
      this.#streams.set(session, stream);
    }
    return stream;
  }

  async resume(session: SessionApi, epoch: string, after: string): Promise<string[]> {
    const user = session.requireUser();
    if (!(session instanceof Session)) throw new CommandError('syntax', 'resume needs a connection (HTTP: GET /api/inbox)');
    const from = parseAfter(after, 'resume,<epoch>,<after>');
    const position = await this.#position(user.id, epoch, from);
    // checked: from here the connection changes (a failed resume leaves it as it was)
    const stream = this.#inboxOf(session);
    stream.stop();
    session.afterReply(() => {
      if (session.user?.id === user.id) stream.start(user.id, position.after);
    });
    return ['resumed', position.epoch, String(position.head)];
  }

  /** GET /api/inbox: one page of entries after `after`; the entries it returns count as received (not for a HEAD, which returns none). */
  async read(user: UserRef, after: string | undefined, limit: string | undefined, epoch = '', written = true): Promise<InboxPage> {
    const from = parseAfter(after ?? '0', 'after=<seq>');
    let n = DEFAULT_HTTP_LIMIT;
    if (limit !== undefined) {
      if (!/^\d+$/.test(limit) || Number(limit) < 1 || Number(limit) > MAX_HTTP_LIMIT)
        throw new CommandError('syntax', `limit is a whole number from 1 to ${MAX_HTTP_LIMIT}`);
      n = Number(limit);
    }
    const position = await this.#position(user.id, epoch, from);
    // pages of big entries from many clients at once take turns with everyone else (bulk-turns.ts)
    const claim = await bulkTurn(pageBytes(this.#settings.window()));
    let rows: InboxRow[] = [];
    try {
      ({ rows } = await this.#data.durableRead((db) => this.#data.after(db, user.id, position.after, n, pageBytes(this.#settings.window()))));
    } finally {
      bulkDone(claim, rowBytes(rows));
    }
    if (written) for (const row of rows) if (Number(row.kind) === KIND_ENTRY && Number(row.pending) === 1) this.#received(user.id, Number(row.seq));
    const entries = rows.map((r) => {
      const fields = parseFields(r.payload);
      return { seq: Number(r.seq), fields: isFieldsFault(fields) ? [] : fields };
    });
    return { epoch: position.epoch, head: position.head, entries };
  }

  /** Where a resume from `after` starts, or `stream_reset`. */
  async #position(userId: number, epoch: string, after: number | 'latest'): Promise<{ epoch: string; head: number; after: number }> {
    const found = await this.#data.durableRead(async (db) => {
      const stream = await this.#data.stream(db, userId);
      if (stream === undefined || after === 'latest') return { stream, retained: 0 };
      const head = Number(stream.head);
      return { stream, retained: after < head ? await this.#data.countBetween(db, userId, after, head) : 0 };
    });
    if (found.stream === undefined) {
      // a new stream: created now, it may already hold what a concurrent append put there, so read again
      await this.#data.ensureStream(userId);
      return this.#position(userId, epoch, after);
    }
    const stream: StreamRow = found.stream;
    const head = Number(stream.head);
    if (epoch !== '' && epoch !== stream.epoch)
      throw new CommandError('stream_reset', 'the inbox was reset since (another epoch): read it again from the latest position');
    if (after === 'latest') return { epoch: stream.epoch, head, after: head };
    if (after > head) throw new CommandError('stream_reset', `the inbox ends at ${head}`);
    if (found.retained !== head - after) throw new CommandError('stream_reset', `entries after ${after} are no longer retained`);
    return { epoch: stream.epoch, head, after };
  }

  // ---- appends ---------------------------------------------------------

  /**
   * `send`: the recipient's entry and the sender's carbon in one commit;
   * `mailbox_full` when the entry would wait for the recipient among
   * `--mailbox-size` others. On the sender's own streaming inbox connection
   * the reply follows the carbon.
   */
  async send(ctx: CommandContext, recipient: UserRef, command: readonly string[]): Promise<void> {
    const sender = ctx.session.requireUser();
    const live = this.#hasLiveConnection(recipient.id);
    const entry: NewEntry = { kind: KIND_ENTRY, pending: live ? 0 : 1, payload: formatFields(['send', sender.name, ...command]) };
    const carbon: NewEntry = { kind: KIND_CARBON, pending: 0, payload: formatFields(['sent', recipient.name, ...command]) };
    const parts: Part[] =
      sender.id === recipient.id
        ? [{ user: recipient, entries: [entry, carbon], limit: !live }]
        : [
            { user: recipient, entries: [entry], limit: !live },
            { user: sender, entries: [carbon], limit: false },
          ];
    this.#replyAfter(ctx, sender.id, await this.#append(parts));
  }

  /** What modules deliver through the hub (friend requests and answers): stored whatever the mailbox holds. */
  async deliver(user: UserRef, fields: readonly string[], cause?: CommandContext): Promise<'pushed' | 'stored'> {
    const live = this.#hasLiveConnection(user.id);
    const entries = await this.#append([{ user, entries: [{ kind: KIND_ENTRY, pending: live ? 0 : 1, payload: formatFields(fields) }], limit: false }]);
    if (cause !== undefined) this.#replyAfter(cause, user.id, entries);
    return live ? 'pushed' : 'stored';
  }

  /**
   * On the request's own streaming inbox connection, of `userId`: its reply
   * follows that user's entries it appended, however far behind a replay
   * they are queued (DELIVERY.md section 3: a request's pushes come first).
   */
  #replyAfter(ctx: CommandContext, userId: number, entries: readonly InboxEntry[]): void {
    const session = ctx.session;
    const stream = session instanceof Session ? this.#streams.get(session) : undefined;
    if (!stream?.streaming || session.user?.id !== userId) return;
    const seq = Math.max(...entries.filter((e) => e.userId === userId).map((e) => e.seq));
    if (seq > 0) (session as Session).delayReply(stream.whenWritten(seq, this.#settings.replyWaitMs()));
  }

  /** A version 1 connection, or an inbox connection that streams: it will be written the entry live. */
  #hasLiveConnection(userId: number): boolean {
    for (const s of this.#hub.sessionsOf(userId)) {
      const stream = this.#streams.get(s);
      if (stream === undefined || stream.streaming) return true;
    }
    return false;
  }

  async #append(parts: Part[]): Promise<InboxEntry[]> {
    // stream rows are locked in user id order, so two appends never wait on each other
    parts.sort((a, b) => a.user.id - b.user.id);
    let entries: InboxEntry[];
    if (this.#data.canShare(parts.map((p) => p.user.id))) {
      const appended = await this.#appends.add(parts);
      if (appended instanceof CommandError) throw appended;
      entries = appended;
    } else {
      entries = await this.#data.write(async (tx: Kysely<any>) => {
        const [appended] = await this.#appendAll(tx, [parts]);
        // thrown inside the transaction: its reservation rolls back with it
        if (appended instanceof CommandError) throw appended;
        return appended!;
      });
    }
    for (const e of entries) {
      if (e.holdsMailbox) this.#hub.stats.stored++;
      this.#retention.touched(e.userId, e.seq);
    }
    this.#afterCommit(() => {
      for (const e of entries) this.#publish(e);
    });
    return entries;
  }

  /**
   * The appends of one turn, in one transaction (see `#appendAll`). Its own
   * locks are taken in order, but a transaction elsewhere that appends twice
   * (a friend change under `once`: one user's push, then the other's) takes
   * two streams in its own order, and PostgreSQL may end a wait between the
   * two as a deadlock. The batch is then run again, once: it changed nothing
   * yet, and its requests did nothing wrong.
   */
  readonly #appends = new TurnBatch<Part[], InboxEntry[] | CommandError>(async (appends) => {
    const run = () => this.#data.write((tx: Kysely<any>) => this.#appendAll(tx, appends));
    return run().catch((err: unknown) => {
      if (!isDeadlock(err)) throw err;
      return run();
    });
  });

  /**
   * Within `tx`: each append's entries (or its `mailbox_full`), in the
   * order given, as if they ran one after another. Every stream's seqs are
   * taken in one step, in ascending user id order (no two transactions can
   * then wait on each other in a cycle); an append that does not fit gives
   * its seqs back, so seqs stay dense.
   */
  async #appendAll(tx: Kysely<any>, appends: readonly Part[][]): Promise<(InboxEntry[] | CommandError)[]> {
    const wants = new Map<number, { userId: number; count: number; countPending: boolean }>();
    for (const part of appends.flat()) {
      const want = wants.get(part.user.id) ?? { userId: part.user.id, count: 0, countPending: false };
      want.count += part.entries.length;
      want.countPending ||= part.limit;
      wants.set(part.user.id, want);
    }
    const ordered = [...wants.values()].sort((a, b) => a.userId - b.userId);
    const reserved = await this.#data.reserveAll(tx, ordered);
    const streams = new Map(
      ordered.map((w, i) => [w.userId, { next: reserved[i]!.first, pending: reserved[i]!.pending, last: reserved[i]!.first + w.count - 1 }]),
    );
    const batches: { userId: number; first: number; entries: NewEntry[] }[] = [];
    const results = appends.map((parts): InboxEntry[] | CommandError => {
      // counted under the stream's lock, with what this transaction stored before: exact even with concurrent sends
      const full = parts.find((part) => part.limit && streams.get(part.user.id)!.pending >= this.#settings.mailboxSize());
      if (full !== undefined) return new CommandError('mailbox_full', `${full.user.name} has too many stored messages`);
      const out: InboxEntry[] = [];
      for (const part of parts) {
        const stream = streams.get(part.user.id)!;
        batches.push({ userId: part.user.id, first: stream.next, entries: part.entries });
        for (const [i, e] of part.entries.entries()) {
          out.push(new InboxEntry(part.user.id, { seq: stream.next + i, ...e }));
          stream.pending += e.pending;
        }
        stream.next += part.entries.length;
      }
      return out;
    });
    for (const [userId, stream] of streams) if (stream.next - 1 < stream.last) await this.#data.giveBack(tx, userId, stream.next - 1);
    // every entry of every append in one statement (a few for many)
    await this.#data.insert(tx, batches, Date.now());
    return results;
  }

  /**
   * Every push of an appended entry goes through here: once the commit is
   * durable (a seq a client has seen is never lost in a crash), which is
   * the outermost transaction's when the append joined one (a command run
   * by `once`); never when it rolls back.
   */
  #afterCommit(fn: () => void): void {
    this.#data.afterCommit(fn);
  }

  /** Pushes a committed entry to the user's connections: inbox form to streaming inbox connections, version 1 form (entries only) to the others. */
  #publish(entry: InboxEntry): void {
    // a recovery of the user's version 1 connections runs (or one starts: an earlier seq's doorbell is still on its way):
    // it writes this entry to them too, in seq order after what it recovers
    const recovery = entry.kind === KIND_ENTRY ? (this.#recovering.get(entry.userId) ?? this.#ahead(entry)) : undefined;
    if (recovery === undefined) this.#hear(entry);
    let reached = 0;
    let deferred = 0;
    const plain: Session[] = [];
    // a live entry none of whose writes succeeds waits for the next version 1 login after all
    const tally: LiveTally = { reached: 0, failed: 0, counted: false };
    const written = entry.kind === KIND_ENTRY && entry.pending === 0 ? this.#liveWritten(entry.userId, entry.seq, tally) : undefined;
    for (const session of this.#hub.sessionsOf(entry.userId)) {
      const stream = this.#streams.get(session);
      if (stream !== undefined) {
        if (stream.offer(entry, written)) reached++;
      } else if (entry.kind === KIND_ENTRY) {
        // stored as not yet received, but a version 1 connection logged in meanwhile
        if (entry.pending === 1) plain.push(session);
        else if (recovery !== undefined) deferred++;
        else if (session.pushFrame(entry.plainFrame, written)) reached++;
      }
    }
    reached += this.#writeStored(entry, plain);
    this.#hub.stats.pushed += reached;
    if (deferred > 0) {
      recovery!.again = true;
      recovery!.local.set(entry.seq, { count: deferred, written: written! });
      reached += deferred;
    }
    // the doorbell for the other nodes: a lost one is noticed by the seq gap it leaves, or re-read after a resubscription
    this.#hub.bus?.publish(userChannel(entry.userId), { kind: 'inbox', seq: entry.seq, fields: { k: entry.kind, p: entry.pending, d: entry.payload } });
    if (written === undefined) return;
    tally.reached = reached;
    tally.counted = true;
    if (tally.failed >= reached) this.#lostLive(entry.userId, entry.seq);
  }

  /**
   * The write callback of a live entry, shared by every connection it goes
   * to: once all of them failed, it is marked not yet received. It holds the
   * user and seq only: an inbox stream far behind may keep it a while, and
   * the entry's text must not stay in memory that long.
   */
  #liveWritten(userId: number, seq: number, tally: LiveTally): Written {
    return (err) => {
      if (!err) return;
      // a failure reported while the writes were still being counted is judged once they are
      if (++tally.failed === tally.reached && tally.counted) this.#lostLive(userId, seq);
    };
  }

  /**
   * An entry another node appended, for this node's connections of the
   * user. Inbox connections take it like a local one (a seq gap makes their
   * stream read the store). Version 1 connections get a live entry (one a
   * connection on the appending node took) as it is, and one stored as not
   * yet received as well (see #writeStored): the appending node cannot know
   * what other nodes' connections take, so it stored the entry pending.
   * While a recovery of the user runs here, it writes the entry to them.
   */
  remote(userId: number, row: InboxRow): void {
    const entry = new InboxEntry(userId, row);
    // a doorbell that comes after a recovery here read its entry from the store (and wrote it), or after the user's first login here
    const dealtWith = this.#heard.has(userId, entry.seq);
    const recovery = entry.kind === KIND_ENTRY && !dealtWith ? (this.#recovering.get(userId) ?? this.#ahead(entry)) : undefined;
    if (recovery === undefined) this.#hear(entry);
    let reached = 0;
    const plain: Session[] = [];
    for (const session of this.#hub.sessionsOf(userId)) {
      const stream = this.#streams.get(session);
      if (stream !== undefined) {
        if (stream.offer(entry)) reached++;
      } else if (entry.kind === KIND_ENTRY && !dealtWith) {
        if (entry.pending === 1) plain.push(session);
        else if (recovery !== undefined) {
          recovery.again = true;
          recovery.arrived.add(entry.seq);
        } else if (session.pushFrame(entry.plainFrame)) reached++;
      }
    }
    this.#hub.stats.pushed += reached;
    this.#hub.stats.pushed += this.#writeStored(entry, plain);
  }

  /**
   * A committed entry stored as not yet received, for version 1
   * connections of its user here: written to each of them at once, like a
   * live entry, and marked received once one write succeeds; a connection
   * that drains the user's mailbox gets it from its drain instead, in order
   * after the backlog (and the drain marks it). Recorded per connection
   * until the mark commits, so a drain that reads it meanwhile does not
   * write it to the same connection again.
   */
  #writeStored(entry: InboxEntry, plain: readonly Session[]): number {
    const user = plain[0]?.user;
    if (user == null) return 0;
    const recovery = this.#recovering.get(entry.userId);
    if (recovery !== undefined) {
      // a recovery writes the user's entries in seq order: this one too, after those before it
      recovery.again = true;
      return 0;
    }
    const draining = this.drains.drainingTo(entry.userId);
    let reached = 0;
    let marked = false;
    const written =
      draining === undefined
        ? (err?: Error | null) => {
            if (err || marked) return;
            marked = true;
            this.#received(entry.userId, entry.seq);
          }
        : undefined;
    for (const session of plain) {
      if (session === draining || this.#drainedAhead.has(entry.userId, entry.seq, session)) continue;
      this.#writtenLive.add(entry.userId, entry.seq, session);
      if (session.pushFrame(entry.plainFrame, written)) reached++;
    }
    this.#drainedAhead.forget(entry.userId, [entry.seq]);
    if (draining !== undefined) this.drains.ensure(user);
    return reached;
  }

  /**
   * In a cluster: this node dealt with the entry for the user's version 1
   * connections here (heard-seqs.ts). Seqs past a gap that does not close
   * (its doorbell lost while the bus looked up) soon make the node read the
   * store as after a resubscription.
   */
  #hear(entry: InboxEntry): void {
    if (this.#hub.bus === undefined) return;
    this.#heard.hear(entry.userId, entry.seq);
    if (this.#heard.gapSize(entry.userId) > MAX_GAP) this.recover([entry.userId]);
  }

  /**
   * In a cluster: an entry for the user's version 1 connections here whose
   * seq is past one this node has not dealt with yet, its doorbell still on
   * the way from another node (the sender's next request went to a node
   * that heard faster, or to this one): a recovery of the user starts at
   * once and takes this entry, so it reads the one missing from the store
   * and writes both in seq order, as a single node would have. Undefined
   * when nothing is missing (or the login's head read has not returned).
   */
  #ahead(entry: InboxEntry): Recovery | undefined {
    if (this.#hub.bus === undefined) return undefined;
    const upTo = this.#heard.upTo(entry.userId);
    if (upTo === undefined || entry.seq <= upTo + 1 || this.#heard.has(entry.userId, entry.seq)) return undefined;
    if (![...this.#hub.sessionsOf(entry.userId)].some((s) => !this.#streams.has(s))) return undefined;
    void this.#track(this.#recoverUser(entry.userId));
    return this.#recovering.get(entry.userId);
  }

  /**
   * Publications may have been lost (the bus came back): streams read the
   * store to their end; the entries after those this node dealt with go to
   * the version 1 connections of the user here as their doorbells would
   * have taken them (#recoverUser).
   */
  recover(userIds: readonly number[]): void {
    for (const userId of userIds) {
      let plain = false;
      for (const session of this.#hub.sessionsOf(userId)) {
        const stream = this.#streams.get(session);
        if (stream !== undefined) stream.catchUp();
        else plain = true;
      }
      if (!plain) continue;
      const running = this.#recovering.get(userId);
      if (running !== undefined) running.again = true;
      else void this.#track(this.#recoverUser(userId));
    }
  }

  /**
   * Reads the user's entries after the last seq this node dealt with
   * (heard-seqs.ts), a page at a time, and writes each one it did not to
   * the version 1 connections of the user here (#writeRecovered): live
   * ones to the connections logged in when they committed, stored ones to
   * every connection (a draining one gets those from its drain). Entries
   * that arrive meanwhile, by doorbell or appended here, wait for it so
   * that all go out in seq order: it reads again until nothing is new. No
   * drain lease: like remote(), these are new entries every connection here
   * takes, not a stored mailbox handed to one connection.
   */
  async #recoverUser(userId: number): Promise<void> {
    const recovery: Recovery = { again: true, local: new Map(), arrived: new Set() };
    this.#recovering.set(userId, recovery);
    let wait = 100;
    try {
      // the logins' head reads: the point from which something may be missing
      for (let ready = this.#heard.ready(userId); ; ) {
        await ready;
        if (this.#heard.upTo(userId) !== undefined || ready === this.#heard.ready(userId)) break;
        ready = this.#heard.ready(userId);
      }
      while (recovery.again && !this.#closed) {
        recovery.again = false;
        let after = this.#heard.upTo(userId);
        // no version 1 connection of the user left here
        if (after === undefined) break;
        for (;;) {
          this.drains.openPage(userId);
          let rows: InboxRow[];
          let more: boolean;
          try {
            ({ rows, more } = await this.#data.durableRead((db) => this.#data.after(db, userId, after!, RECOVER_PAGE, pageBytes(this.#settings.window()))));
          } catch (err) {
            this.drains.closePage(userId);
            // the store is away too: try again (the entries are committed, so they are there once it is back)
            this.#log.warn({ err: (err as Error).message, user: userId }, 'inbox recovery cannot read the store; trying again');
            await new Promise((resolve) => setTimeout(resolve, wait).unref());
            wait = Math.min(2000, wait * 2);
            recovery.again = true;
            break;
          }
          try {
            for (const row of rows) {
              const entry = new InboxEntry(userId, row);
              if (!this.#heard.has(userId, entry.seq)) this.#writeRecovered(entry, recovery);
              this.#heard.hear(userId, entry.seq);
            }
          } finally {
            this.drains.closePage(userId);
          }
          if (rows.length === 0) break;
          after = Number(rows.at(-1)!.seq);
          // every seq up to the last read is dealt with: those the store lacks left the retention window
          this.#heard.settle(userId, after);
          if (!more) break;
        }
      }
    } catch (err) {
      this.#log.warn({ err: (err as Error).message, user: userId }, 'inbox recovery stopped; the entries stay stored');
    } finally {
      this.#recovering.delete(userId);
      // live entries appended here and left unwritten (the node closes, the connections left): as if their writes failed
      for (const { count, written } of recovery.local.values()) for (let i = 0; i < count; i++) written(new Error('not written'));
    }
  }

  /**
   * One entry a recovery found this node had not dealt with, for the
   * user's version 1 connections here, each written once (written-live.ts
   * records it until its received mark commits). A live entry goes to the
   * connections logged in when it committed; a stored one to every
   * connection, a draining one taking it from its drain (poked to read
   * again), which then marks it.
   */
  #writeRecovered(entry: InboxEntry, recovery: Recovery): void {
    const local = recovery.local.get(entry.seq);
    recovery.local.delete(entry.seq);
    // its doorbell came, or it was appended here, while this recovery ran: not lost, for every connection here
    const arrived = recovery.arrived.delete(entry.seq) || local !== undefined;
    const plain = entry.kind !== KIND_ENTRY ? [] : [...this.#hub.sessionsOf(entry.userId)].filter((s) => !this.#streams.has(s) && s.user !== null);
    const user = plain[0]?.user;
    const live = entry.pending === 0;
    const draining = this.drains.drainingTo(entry.userId);
    let marked = false;
    const mark = () => {
      if (marked) return;
      marked = true;
      this.#received(entry.userId, entry.seq);
    };
    const written = !live && draining !== undefined ? undefined : (err?: Error | null) => void (err ? undefined : mark());
    let attempted = 0;
    // an entry appended here: as one write for its append, failed only when every write here failed
    let settling = 0;
    let succeeded = 0;
    const failAll = () => {
      if (local !== undefined) for (let i = 0; i < local.count; i++) local.written(new Error('not written'));
    };
    for (const session of plain) {
      if (!live && session === draining) continue;
      // a lost live entry is for the connections logged in at its commit (an unknown login head: written rather than missed)
      if (live && !arrived && (this.#since.get(session) ?? 0) >= entry.seq) continue;
      // a drain here wrote it (and marked it, or will): not again
      if (this.#drainedAhead.has(entry.userId, entry.seq, session)) continue;
      // written here before (its mark still on its way): not again
      if (this.#writtenLive.has(entry.userId, entry.seq, session)) {
        if (written !== undefined) mark();
        continue;
      }
      this.#writtenLive.add(entry.userId, entry.seq, session);
      const done: Written | undefined =
        local === undefined
          ? written
          : (err) => {
              written?.(err);
              if (!err) succeeded++;
              if (--settling === 0 && succeeded === 0) failAll();
            };
      if (local !== undefined) settling++;
      if (session.pushFrame(entry.plainFrame, done)) attempted++;
      else if (local !== undefined) settling--;
    }
    this.#hub.stats.pushed += attempted;
    this.#drainedAhead.forget(entry.userId, [entry.seq]);
    // none of the connections it was appended for took a write (gone, or refused it)
    if (local !== undefined && attempted === 0) failAll();
    if (!live && draining !== undefined && user != null) this.drains.ensure(user);
  }

  #lostLive(userId: number, seq: number): void {
    if (this.#closed) return;
    const key = markKey(userId, seq);
    const marking = this.#track(this.#data.markPending(userId, seq));
    this.#markingPending.set(key, marking);
    const done = () => {
      if (this.#markingPending.get(key) === marking) this.#markingPending.delete(key);
    };
    marking.then(done, done);
    marking.then(
      () => void this.#hub.stats.stored++,
      (err: unknown) => {
        this.#hub.stats.lost++;
        this.#log.warn(
          { err: (err as Error).message, user: userId, seq },
          'an entry whose live writes failed could not be kept for the next login',
        );
      },
    );
  }

  // ---- received marks (received-marks.ts) --------------------------------

  #received(userId: number, seq: number): void {
    // written after all (a restarted inbox stream), while its "not received" mark is on its way: this one goes after
    // it, or the store would end up saying not received, and a version 1 login would get the entry a second time
    const marking = this.#markingPending.get(markKey(userId, seq));
    if (marking !== undefined) {
      const after = () => this.#received(userId, seq);
      void marking.then(after, after);
      return;
    }
    this.#marks.add(userId, seq);
  }

  // ---- retention (inbox-retention.ts) ------------------------------------

  startSweeper(): void {
    this.#retention.start();
  }

  stopSweeper(): void {
    this.#retention.stop();
  }

  /** A retention sweep now (after the one running). */
  sweep(now = Date.now()): Promise<void> {
    return this.#retention.sweep(now);
  }

  /**
   * Before the store closes: starts no more background work and waits (at
   * most `timeoutMs`) for what runs, the last received marks included.
   */
  async close(timeoutMs = 5000): Promise<void> {
    this.#retention.close();
    this.#marks.close();
    this.#closed = true;
    const deadline = Date.now() + timeoutMs;
    while (this.#background.size > 0 && Date.now() < deadline) {
      await Promise.race([Promise.allSettled([...this.#background]), new Promise((r) => setTimeout(r, Math.max(1, deadline - Date.now())).unref())]);
    }
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#background.add(p);
    const done = () => this.#background.delete(p);
    p.then(done, done);
    return p;
  }
}

function markKey(userId: number, seq: number): string {
  return `${userId}:${seq}`;
}

/** `<after>`: a whole number >= 0, or `latest`. */
function parseAfter(text: string, usage: string): number | 'latest' {
  if (text === 'latest') return 'latest';
  if (!/^\d+$/.test(text)) throw new CommandError('syntax', `usage: ${usage} (<after> is a seq >= 0 or latest)`);
  // a whole number too big to be a seq is still one: past the head (stream_reset), not syntax
  return Math.min(Number(text), Number.MAX_SAFE_INTEGER);
}
