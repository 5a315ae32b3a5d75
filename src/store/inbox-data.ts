/**
 * The per-user inbox (DELIVERY.md): one durable, ordered stream of entries
 * per user, and the queries the core runs on it. `inbox_streams` holds each
 * stream's epoch and head (its last seq); `inbox` its retained entries.
 *
 * - An append takes the stream row's lock (`UPDATE ... SET head = head + n
 *   RETURNING`), so on PostgreSQL seqs are assigned in commit order and a
 *   committed seq never has an uncommitted lower one; SQLite runs one
 *   transaction at a time anyway.
 * - `pending = 1` marks a kind-0 entry no connection has received yet: what
 *   a version 1 login drains, what `--mailbox-size` bounds, what retention
 *   never drops. Carbons (kind 1) are never pending.
 * - Indexes: the primary key (user_id, seq) serves replays and the window
 *   sweep; `inbox_pending`, (user_id, seq) of pending entries only, the
 *   drain and the mailbox count; and (pending, created_at) the age sweep,
 *   so that pending entries (which the age sweep must skip) are not even in
 *   the range it scans. Only pending entries are in `inbox_pending`: most
 *   entries (live ones, carbons) never are, so an append writes one index
 *   page per stream fewer. Queries spell `pending = 1` as a literal, the
 *   form in which SQLite's planner may use a partial index.
 */
import { randomInt } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import { inAmbientTransaction } from './ambient.ts';
import { prepared, type Prepared } from './prepared.ts';
import type { Migration, Store } from './store.ts';

export const KIND_ENTRY = 0;
export const KIND_CARBON = 1;

export type InboxRow = { readonly seq: number; readonly kind: number; readonly pending: number; readonly payload: string };
export type StreamRow = { readonly epoch: string; readonly head: number };
export type NewEntry = { readonly kind: number; readonly pending: number; readonly payload: string };
/**
 * Payload bytes one page of entries holds at most (one entry at least),
 * and never more than the unsent bytes a drain or replay may leave on a
 * connection (`window`): what a page costs in memory, whatever the entries.
 */
export function pageBytes(window: number): number {
  return Math.min(window, 1024 * 1024);
}

/** A page of entries, and whether it stopped at a bound (more may follow). */
export type EntryPage = { readonly rows: InboxRow[]; readonly more: boolean };

type InboxTables = {
  inbox_streams: { user_id: number; epoch: string; head: number };
  inbox: { user_id: number; seq: number; kind: number; pending: number; payload: string; created_at: number };
  mailbox: { id: number; user_id: number; payload: string; created_at: number };
};

const EPOCH_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** 12 random characters of [A-Za-z0-9]: a new stream's epoch. */
export function newEpoch(): string {
  let epoch = '';
  for (let i = 0; i < 12; i++) epoch += EPOCH_CHARS[randomInt(EPOCH_CHARS.length)];
  return epoch;
}

/**
 * Core schema step 2: the inbox replaces the mailbox. Stored messages are
 * carried over as pending entries, oldest first, so an upgrade keeps them;
 * the mailbox table is dropped.
 */
export const INBOX_MIGRATION: Migration = async ({ db }) => {
  await db.schema
    .createTable('inbox_streams')
    .addColumn('user_id', 'bigint', (c) => c.primaryKey().references('users.id'))
    .addColumn('epoch', 'text', (c) => c.notNull())
    .addColumn('head', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('inbox')
    .addColumn('user_id', 'bigint', (c) => c.notNull().references('users.id'))
    .addColumn('seq', 'bigint', (c) => c.notNull())
    .addColumn('kind', 'smallint', (c) => c.notNull())
    .addColumn('pending', 'smallint', (c) => c.notNull())
    .addColumn('payload', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('inbox_pk', ['user_id', 'seq'])
    .execute();
  await db.schema.createIndex('inbox_pending').on('inbox').columns(['user_id', 'pending', 'seq']).execute();
  await db.schema.createIndex('inbox_age').on('inbox').columns(['pending', 'created_at']).execute();
  const tx = db as Kysely<InboxTables>;
  // one user at a time, in id order: seqs 1..n per user, no window functions needed
  const users = await tx.selectFrom('mailbox').select('user_id').distinct().orderBy('user_id').execute();
  for (const { user_id } of users) {
    const rows = await tx.selectFrom('mailbox').select(['payload', 'created_at']).where('user_id', '=', user_id).orderBy('id').execute();
    for (let i = 0; i < rows.length; i += 200) {
      const values = rows
        .slice(i, i + 200)
        .map((r, k) => ({ user_id, seq: i + k + 1, kind: KIND_ENTRY, pending: 1, payload: r.payload, created_at: Number(r.created_at) }));
      await tx.insertInto('inbox').values(values).execute();
    }
    await tx.insertInto('inbox_streams').values({ user_id, epoch: newEpoch(), head: rows.length }).execute();
  }
  await db.schema.dropTable('mailbox').execute();
};

/**
 * Core schema step 3: `inbox_pending` holds pending entries only (see the
 * top of this file). Both dialects take the same SQL.
 */
export const INBOX_PENDING_MIGRATION: Migration = 'DROP INDEX inbox_pending; CREATE INDEX inbox_pending ON inbox (user_id, seq) WHERE pending = 1';

/** `pending = 1` as a literal (a bound parameter would keep SQLite's planner off the partial index). */
const IS_PENDING = sql<boolean>`pending = 1`;

// the statements of every append, compiled once (see prepared.ts)
const bumpHead = prepared<{ user: number; count: number }, { head: number; epoch: string }>((db: Kysely<InboxTables>, $) =>
  db
    .updateTable('inbox_streams')
    .set((eb) => ({ head: eb('head', '+', $('count')) }))
    .where('user_id', '=', $('user'))
    .returning(['head', 'epoch']),
);
type EntryArgs = Record<string, number | string>;
const ENTRY_COLUMNS = ['user_id', 'seq', 'kind', 'pending', 'payload', 'created_at'] as const;
/** INSERTs of 1, 2, ... rows (a send writes two: the entry and its carbon), each compiled once. */
const insertRows: Prepared<EntryArgs, unknown>[] = [];
function insertOf(rows: number): Prepared<EntryArgs, unknown> {
  let p = insertRows[rows];
  if (p === undefined) {
    p = prepared<EntryArgs>((db: Kysely<InboxTables>, $) =>
      db.insertInto('inbox').values(
        Array.from({ length: rows }, (_, r) => Object.fromEntries(ENTRY_COLUMNS.map((c) => [c, $(`${c}${r}`)])) as InboxTables['inbox']),
      ),
    );
    insertRows[rows] = p;
  }
  return p;
}
const setHead = prepared<{ user: number; head: number }>((db: Kysely<InboxTables>, $) =>
  db.updateTable('inbox_streams').set({ head: $('head') }).where('user_id', '=', $('user')),
);
/** Rows per INSERT statement. */
const INSERT_ROWS = 200;
const countPending = prepared<{ user: number }, { n: number }>((db: Kysely<InboxTables>, $) =>
  db
    .selectFrom('inbox')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('user_id', '=', $('user'))
    .where(IS_PENDING),
);

/** What `reserveAll` takes and gives per stream. */
export type Want = { readonly userId: number; readonly count: number; readonly countPending: boolean };
export type Reserved = { readonly first: number; readonly epoch: string; readonly pending: number };

/** PostgreSQL ended a lock wait that closed a cycle (SQLSTATE 40P01): the transaction rolled back, and may run again. */
export function isDeadlock(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === '40P01';
}

export class InboxData {
  readonly #store: Store;
  /** Users whose stream row this process has seen committed: rows are never deleted, so they exist. */
  readonly #existing = new Set<number>();

  constructor(store: Store) {
    this.#store = store;
  }

  get #db(): Kysely<InboxTables> {
    return this.#store.db as Kysely<InboxTables>;
  }

  /** A write transaction (resolves once durable). */
  write<R>(fn: (tx: Kysely<any>) => Promise<R>): Promise<R> {
    return this.#store.transaction(fn);
  }

  /** Runs `fn` once the open transaction of this call chain is durable (at once outside one). */
  afterCommit(fn: () => void): void {
    this.#store.afterCommit(fn);
  }

  /**
   * Within `tx`: takes `count` seqs from the user's stream (creating it on
   * first use) and returns the first one with the epoch. Holds the stream
   * row's lock until `tx` ends: call it for several users in ascending id
   * order, so two transactions never wait on each other.
   */
  async reserve(tx: Kysely<any>, userId: number, count: number): Promise<{ first: number; epoch: string }> {
    const t = tx as Kysely<InboxTables>;
    const bump = () => bumpHead.first(t, { user: userId, count });
    let row = await bump();
    if (row === undefined) {
      await t
        .insertInto('inbox_streams')
        .values({ user_id: userId, epoch: newEpoch(), head: 0 })
        .onConflict((oc) => oc.column('user_id').doNothing())
        .execute();
      row = await bump();
      if (row === undefined) throw new Error(`no inbox stream for user ${userId}`);
    }
    return { first: Number(row.head) - count + 1, epoch: row.epoch };
  }

  /**
   * Within `tx`: `reserve` for each want, in the order given (ascending user
   * ids), and each want's pending count when asked, read under its stream's
   * lock. On PostgreSQL the statements are written without waiting for the
   * previous answers (the connection is pipelined, so they still run in
   * order): one round trip for a send's two streams instead of three or
   * four. Only for streams known to exist: creating a missing one there
   * would take its lock out of order.
   */
  async reserveAll(tx: Kysely<any>, wants: readonly Want[]): Promise<Reserved[]> {
    const t = tx as Kysely<InboxTables>;
    if (this.#store.dialect === 'postgres' && wants.every((w) => this.#existing.has(w.userId))) {
      const issued = wants.map((w) => ({
        head: bumpHead.first(t, { user: w.userId, count: w.count }),
        pending: w.countPending ? countPending.first(t, { user: w.userId }) : undefined,
      }));
      // all awaited together: a failed statement fails those after it too, and none may go unhandled
      const [heads, counts] = await Promise.all([Promise.all(issued.map((i) => i.head)), Promise.all(issued.map((i) => i.pending))]);
      if (heads.every((row) => row !== undefined)) {
        return heads.map((row, i) => ({ first: Number(row!.head) - wants[i]!.count + 1, epoch: row!.epoch, pending: Number(counts[i]?.n ?? 0) }));
      }
      // a stream row gone (a database restored under the server): this request fails, the next ones take the careful path
      this.#existing.clear();
      throw new Error('an inbox stream row is missing');
    }
    const out: Reserved[] = [];
    for (const w of wants) {
      const { first, epoch } = await this.reserve(tx, w.userId, w.count);
      out.push({ first, epoch, pending: w.countPending ? await this.pendingCount(w.userId, tx) : 0 });
    }
    // known to exist once committed: a row this transaction made is gone if it rolls back
    this.#store.afterCommit(() => {
      for (const w of wants) this.#existing.add(w.userId);
    });
    return out;
  }

  /**
   * Appends of several requests may share one transaction (PostgreSQL: one
   * commit and one round trip for a turn's sends) when no transaction is
   * open in this call chain and every stream is known to exist, so that
   * `reserveAll` takes their locks in one pipelined, ordered step.
   */
  canShare(userIds: readonly number[]): boolean {
    return this.#store.dialect === 'postgres' && !inAmbientTransaction() && userIds.every((id) => this.#existing.has(id));
  }

  /** Within `tx`, holding the stream's lock: seqs above `head` that `reserveAll` took were not used after all. */
  async giveBack(tx: Kysely<any>, userId: number, head: number): Promise<void> {
    await setHead.execute(tx, { user: userId, head });
  }

  /** Within `tx`: each user's entries at seqs first, first + 1, ... (what `reserve` gave). */
  async insert(tx: Kysely<any>, batches: readonly { userId: number; first: number; entries: readonly NewEntry[] }[], now: number): Promise<void> {
    const rows = batches.flatMap(({ userId, first, entries }) =>
      entries.map((e, i) => ({ user_id: userId, seq: first + i, kind: e.kind, pending: e.pending, payload: e.payload, created_at: now })),
    );
    for (let at = 0; at < rows.length; at += INSERT_ROWS) {
      const chunk = rows.slice(at, at + INSERT_ROWS);
      const args: EntryArgs = {};
      for (const [r, row] of chunk.entries()) for (const c of ENTRY_COLUMNS) args[`${c}${r}`] = row[c];
      await insertOf(chunk.length).execute(tx, args);
    }
  }

  /** Kind-0 entries no connection has received yet (within `tx` when given). */
  async pendingCount(userId: number, tx?: Kysely<any>): Promise<number> {
    const row = await countPending.first(tx ?? this.#db, { user: userId });
    return Number(row!.n);
  }

  /**
   * A read whose rows will be pushed: it resolves only once everything it
   * may have seen is durable (on SQLite a commit is visible before its
   * fsync), so a client never sees a seq a crash could take back.
   */
  durableRead<R>(fn: (db: Kysely<any>) => Promise<R>): Promise<R> {
    return this.#store.transaction(fn);
  }

  stream(db: Kysely<any>, userId: number): Promise<StreamRow | undefined> {
    return (db as Kysely<InboxTables>).selectFrom('inbox_streams').select(['epoch', 'head']).where('user_id', '=', userId).executeTakeFirst();
  }

  /** The user's stream, created (empty, with a new epoch) when it does not exist yet. */
  async ensureStream(userId: number): Promise<StreamRow> {
    const found = await this.durableRead((db) => this.stream(db, userId));
    if (found !== undefined) return { epoch: found.epoch, head: Number(found.head) };
    return this.#store.transaction(async (tx: Kysely<InboxTables>) => {
      await tx
        .insertInto('inbox_streams')
        .values({ user_id: userId, epoch: newEpoch(), head: 0 })
        .onConflict((oc) => oc.column('user_id').doNothing())
        .execute();
      const row = (await this.stream(tx, userId))!;
      return { epoch: row.epoch, head: Number(row.head) };
    });
  }

  /** The heads of these users' streams (those that have one), read in chunks of ids. */
  async heads(userIds: readonly number[]): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    for (let i = 0; i < userIds.length; i += 500) {
      const rows = await this.#db
        .selectFrom('inbox_streams')
        .select(['user_id', 'head'])
        .where('user_id', 'in', userIds.slice(i, i + 500))
        .execute();
      for (const r of rows) out.set(Number(r.user_id), Number(r.head));
    }
    return out;
  }

  /** The users whose stream holds more than `retain` seqs, with their heads: those a window sweep may have to trim. */
  async streamsPast(retain: number): Promise<Map<number, number>> {
    const rows = await this.#db.selectFrom('inbox_streams').select(['user_id', 'head']).where('head', '>', retain).execute();
    return new Map(rows.map((r) => [Number(r.user_id), Number(r.head)]));
  }

  /** How many entries with after < seq <= head are retained. */
  async countBetween(db: Kysely<any>, userId: number, after: number, head: number): Promise<number> {
    const row = await (db as Kysely<InboxTables>)
      .selectFrom('inbox')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('user_id', '=', userId)
      .where('seq', '>', after)
      .where('seq', '<=', head)
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  /**
   * Retained entries with seq > after, oldest first: at most `limit`, and
   * no more than about `maxBytes` of payload (one entry at least). `more`:
   * the page stopped at a bound, so entries may follow.
   */
  after(db: Kysely<any>, userId: number, after: number, limit: number, maxBytes: number): Promise<EntryPage> {
    return this.#page(db, userId, after, limit, maxBytes, false);
  }

  /** Pending (not yet received) entries with seq > after, oldest first, bounded as `after`: a version 1 drain's page. */
  async pendingAfter(db: Kysely<any>, userId: number, after: number, limit: number, maxBytes: number): Promise<InboxRow[]> {
    return (await this.#page(db, userId, after, limit, maxBytes, true)).rows;
  }

  /**
   * A page bounded in rows and bytes. Entries may be as big as a request
   * (1 MiB), so a page of `limit` of them could hold hundreds of MB, all
   * read at once (on SQLite, on the event loop). Payloads are read only
   * when small (at most maxBytes / limit each, so that read is bounded
   * too); sizes come with them, and the big ones that fit are read
   * afterwards. One query for the usual page of small entries.
   */
  async #page(db: Kysely<any>, userId: number, after: number, limit: number, maxBytes: number, pendingOnly: boolean): Promise<EntryPage> {
    const t = db as Kysely<InboxTables>;
    const size = sql<number>`octet_length(${sql.ref('payload')})`;
    const small = Math.max(1, Math.floor(maxBytes / limit));
    let q = t
      .selectFrom('inbox')
      .select(['seq', 'kind', 'pending', size.as('size'), sql<string | null>`CASE WHEN ${size} <= ${small} THEN ${sql.ref('payload')} END`.as('payload')])
      .where('user_id', '=', userId)
      .where('seq', '>', after);
    if (pendingOnly) q = q.where(IS_PENDING);
    const found = await q.orderBy('seq').limit(limit).execute();
    const rows: { seq: number; kind: number; pending: number; payload: string | null }[] = [];
    let bytes = 0;
    for (const r of found) {
      if (rows.length > 0 && bytes + Number(r.size) > maxBytes) break;
      bytes += Number(r.size);
      rows.push(r);
    }
    const big = rows.filter((r) => r.payload === null).map((r) => r.seq);
    if (big.length > 0) {
      const payloads = new Map<number, string>();
      for (const r of await t.selectFrom('inbox').select(['seq', 'payload']).where('user_id', '=', userId).where('seq', 'in', big).execute())
        payloads.set(Number(r.seq), r.payload);
      for (const r of rows) if (r.payload === null) r.payload = payloads.get(Number(r.seq)) ?? null;
    }
    // an entry dropped by retention between the two reads (PostgreSQL) is left out, as if read a moment later
    const complete = rows.filter((r): r is InboxRow & { payload: string } => r.payload !== null);
    return { rows: complete, more: rows.length < found.length || found.length === limit };
  }

  /**
   * Called with the users of every committed received mark (whoever made
   * it: a drain, a replay, the HTTP API): entries kept past the window only
   * because they were pending may go now, so the retention sweep looks at
   * these users.
   */
  onReceived: (userIds: Iterable<number>) => void = () => {};

  /** Received: these entries (by user) no longer hold retention or mailbox room. */
  async markReceived(marks: ReadonlyMap<number, readonly number[]>): Promise<void> {
    if (marks.size === 0) return;
    await this.#markReceived(marks);
    this.onReceived(marks.keys());
  }

  async #markReceived(marks: ReadonlyMap<number, readonly number[]>): Promise<void> {
    await this.#store.transaction(async (tx: Kysely<InboxTables>) => {
      for (const [userId, seqs] of marks) {
        for (let i = 0; i < seqs.length; i += 500) {
          await tx
            .updateTable('inbox')
            .set({ pending: 0 })
            .where('user_id', '=', userId)
            .where('seq', 'in', seqs.slice(i, i + 500))
            .where('pending', '=', 1)
            .execute();
        }
      }
    });
  }

  /** Not received after all (every write of it failed): a version 1 login will drain it. */
  async markPending(userId: number, seq: number): Promise<void> {
    await this.#store.transaction((tx: Kysely<InboxTables>) =>
      tx.updateTable('inbox').set({ pending: 1 }).where('user_id', '=', userId).where('seq', '=', seq).where('kind', '=', KIND_ENTRY).execute(),
    );
  }

  /** Drops received entries at or below `seq` (the window sweep). */
  async trim(userIdsAndBounds: ReadonlyMap<number, number>): Promise<number> {
    if (userIdsAndBounds.size === 0) return 0;
    return this.#store.transaction(async (tx: Kysely<InboxTables>) => {
      let n = 0;
      for (const [userId, upTo] of userIdsAndBounds) {
        const r = await tx.deleteFrom('inbox').where('user_id', '=', userId).where('pending', '=', 0).where('seq', '<=', upTo).executeTakeFirst();
        n += Number(r.numDeletedRows);
      }
      return n;
    });
  }

  /** Drops up to `limit` received entries created before `before` (the age sweep); returns how many. */
  async expire(before: number, limit: number): Promise<number> {
    const rows = await this.#db
      .selectFrom('inbox')
      .select(['user_id', 'seq'])
      .where('pending', '=', 0)
      .where('created_at', '<', before)
      .orderBy('created_at')
      .limit(limit)
      .execute();
    if (rows.length === 0) return 0;
    const byUser = new Map<number, number[]>();
    for (const r of rows) {
      const id = Number(r.user_id);
      let list = byUser.get(id);
      if (list === undefined) byUser.set(id, (list = []));
      list.push(Number(r.seq));
    }
    await this.#store.transaction(async (tx: Kysely<InboxTables>) => {
      for (const [userId, seqs] of byUser) {
        await tx.deleteFrom('inbox').where('user_id', '=', userId).where('seq', 'in', seqs).where('pending', '=', 0).execute();
      }
    });
    return rows.length;
  }
}
