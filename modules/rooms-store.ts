/**
 * The rooms module's tables behind an asynchronous repository, with an
 * in-memory membership index for fan-out (loaded at start, kept in step
 * with committed writes).
 */
import { PostgresAdapter, sql, type Generated, type Kysely } from 'kysely';
import { prepared, TurnBatch, type Migration, type StoreApi } from '../src/core/module-api.ts';

/** `prev`: in a cluster, the id of the room's message before this one (0: none), so every node pushes them in id order (room-order.ts). */
export type RoomMessage = { id: number; time: number; user: string; text: string; prev?: number };
/** A history page: `more` when it stopped at the byte bound before the query's end. */
export type HistoryPage = { messages: RoomMessage[]; more: boolean };

type Tables = {
  rooms: { id: Generated<number>; name: string; created_at: number };
  room_members: { room_id: number; user_id: number; joined_at: number };
  room_messages: { id: Generated<number>; room_id: number; time: number; user: string; text: string };
};

const NOBODY: ReadonlySet<number> = new Set();

// the statements of every `say`, compiled once (see prepared.ts)
// SQLite: one message (its store commits a turn's transactions together)
const insertMessage = prepared<{ room: number; time: number; user: string; text: string }, { id: number }>((db: Kysely<Tables>, $) =>
  db.insertInto('room_messages').values({ room_id: $('room'), time: $('time'), user: $('user'), text: $('text') }).returning('id'),
);
/**
 * PostgreSQL: a turn's messages in one statement, their values as arrays
 * (one statement to bind, run and answer instead of one per message).
 * PostgreSQL does not promise the order of RETURNING's rows, so they are
 * matched to the arrays by id: `unnest` yields the arrays in order, the
 * rows are inserted in that order (ORDER BY the ordinality), and each takes
 * its id from the sequence as it is inserted, so ids ascend in array order.
 * `inOrder`, in a cluster: the time is taken under the room's lock, never
 * before the room's newest message, so times never go backwards in id
 * order when several servers append to one room (each took its clock's
 * time before waiting for the lock, and a later commit could carry an
 * earlier time). Every row of the statement compares with the room's
 * newest message from before it; the times of one turn's appends never go
 * backwards, so neither do those rows'.
 */
type Batch = { rooms: number[]; times: number[]; users: string[]; texts: string[] };
type BatchRow = { id: number; time: number; room_id: number; prev: number | null };
const insertBatch = (inOrder: boolean) =>
  prepared<Batch, BatchRow>((db: Kysely<Tables>, $) =>
    db
      .insertInto('room_messages')
      .columns(['room_id', 'time', 'user', 'text'])
      .expression(
        sql`SELECT m.room, ${
          inOrder
            ? sql`GREATEST(m.time, COALESCE((SELECT r.time FROM room_messages r WHERE r.room_id = m.room ORDER BY r.id DESC LIMIT 1), 0))`
            : sql`m.time`
        }, m.usr, m.txt FROM unnest(${$('rooms')}::int8[], ${$('times')}::int8[], ${$('users')}::text[], ${$('texts')}::text[]) WITH ORDINALITY AS m(room, time, usr, txt, n) ORDER BY m.n`,
      )
      .returning([
        'id',
        'time',
        'room_id',
        // in a cluster, the room's newest message from before this statement (which sees none of its own rows): the first `prev` of the room's rows
        inOrder
          ? sql<number | null>`(SELECT r.id FROM room_messages r WHERE r.room_id = room_messages.room_id ORDER BY r.id DESC LIMIT 1)`.as('prev')
          : sql<null>`NULL::int8`.as('prev'),
      ]),
  );
const insertBatchAlone = insertBatch(false);
const insertBatchInOrder = insertBatch(true);
/**
 * A room's appends take turns on PostgreSQL (several servers on one
 * database): an advisory lock keyed by the room, not its row's FOR UPDATE,
 * which would write a lock into the row (a WAL record) on every `say`. One
 * transaction holds the rooms of a whole turn's appends: it takes their
 * locks in ascending order, so two such transactions (here or on another
 * server) can wait for each other only one way, never in a cycle.
 */
const ROOM_LOCKS = 7_878; // the first key of the two-key form, so no single-key lock (migrations, friends) can collide
const lockRooms = prepared<{ rooms: number[] }>((db: Kysely<Tables>, $) =>
  db
    .selectFrom(sql<{ room: number }>`(SELECT unnest(${$('rooms')}::int4[]) AS room ORDER BY 1)`.as('r'))
    .select(sql<void>`pg_advisory_xact_lock(${ROOM_LOCKS}, r.room)`.as('locked')),
);

/** One room's part of a turn's appends. */
type Append = { roomId: number; messages: readonly { user: string; text: string }[]; time: number };

export const ROOM_MIGRATIONS: readonly Migration[] = [
  async ({ db, id }) => {
    await db.schema
      .createTable('rooms')
      .addColumn('id', id.type, id.column)
      .addColumn('name', 'text', (c) => c.notNull().unique())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema
      .createTable('room_members')
      .addColumn('room_id', 'bigint', (c) => c.notNull().references('rooms.id'))
      .addColumn('user_id', 'bigint', (c) => c.notNull())
      .addColumn('joined_at', 'bigint', (c) => c.notNull())
      .addPrimaryKeyConstraint('room_members_pk', ['room_id', 'user_id'])
      .execute();
    await db.schema
      .createTable('room_messages')
      .addColumn('id', id.type, id.column)
      .addColumn('room_id', 'bigint', (c) => c.notNull().references('rooms.id'))
      .addColumn('time', 'bigint', (c) => c.notNull())
      .addColumn('user', 'text', (c) => c.notNull())
      .addColumn('text', 'text', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('room_messages_by_room').on('room_messages').columns(['room_id', 'id']).execute();
    await db.schema.createIndex('room_messages_by_time').on('room_messages').columns(['room_id', 'time']).execute();
  },
  // a room's times never go backwards in id order, so `since` and `between` find their ids in the id index
  // (`#firstAt`); this index cost every `say` a page of its room's in each commit
  'DROP INDEX IF EXISTS room_messages_by_time',
];

export type HistoryMode = 'last' | 'since' | 'after' | 'before' | 'between';

export class RoomStore {
  readonly #store: StoreApi;
  readonly #ids = new Map<string, number>();
  readonly #members = new Map<string, Set<number>>();
  readonly #byUser = new Map<number, Set<string>>();
  #lastTime = 0;
  /** SQLite needs no lock for a room (one process, one writer); PostgreSQL takes one per append. */
  readonly #postgres: boolean;
  /** Several servers append to these rooms (see `open`). */
  #shared = false;

  private constructor(store: StoreApi) {
    this.#store = store;
    this.#postgres = store.db.getExecutor().adapter instanceof PostgresAdapter;
  }

  get #db(): Kysely<Tables> {
    return this.#store.db as Kysely<Tables>;
  }

  /**
   * Reads the rooms and the membership index. `shared`: other servers
   * append to the same rooms (a cluster). Only then is a message's time
   * read against the room's newest under the lock (a look-up per message);
   * one process keeps its times in order itself.
   */
  static async open(store: StoreApi, shared = false): Promise<RoomStore> {
    const s = new RoomStore(store);
    s.#shared = shared && s.#postgres;
    await s.reload();
    const last = await s.#db
      .selectFrom('room_messages')
      .select((eb) => eb.fn.max('time').as('t'))
      .executeTakeFirst();
    s.#lastTime = Number(last?.t ?? 0);
    return s;
  }

  /** Reads the rooms and the membership index again (in a cluster, after joins and leaves may have gone unheard). */
  async reload(): Promise<void> {
    const members = await this.#db
      .selectFrom('room_members as m')
      .innerJoin('rooms as r', 'r.id', 'm.room_id')
      .select(['r.id as id', 'r.name as room', 'm.user_id as user'])
      .execute();
    this.#ids.clear();
    this.#members.clear();
    this.#byUser.clear();
    for (const m of members) {
      this.#ids.set(m.room, Number(m.id));
      this.index(m.room, Number(m.user));
    }
  }

  /** Users in at least one room. */
  users(): IterableIterator<number> {
    return this.#byUser.keys();
  }

  members(room: string): ReadonlySet<number> {
    return this.#members.get(room) ?? NOBODY;
  }

  isMember(room: string, userId: number): boolean {
    return this.#members.get(room)?.has(userId) === true;
  }

  roomsOf(userId: number): string[] {
    return [...(this.#byUser.get(userId) ?? [])];
  }

  /** The room's id, creating the room (durably) on first use. */
  async ensure(room: string, now: number): Promise<number> {
    const known = this.#ids.get(room);
    if (known !== undefined) return known;
    const id = await this.#store.transaction(async (tx: Kysely<Tables>) => {
      await tx
        .insertInto('rooms')
        .values({ name: room, created_at: now })
        .onConflict((oc) => oc.column('name').doNothing())
        .execute();
      const row = await tx.selectFrom('rooms').select('id').where('name', '=', room).executeTakeFirstOrThrow();
      return Number(row.id);
    });
    this.#ids.set(room, id);
    return id;
  }

  /**
   * The room's id, or undefined when there is no such room. In a cluster a
   * room may have been made on another node after this one read its rooms
   * (this node hears joins, not creations), so an unknown name is looked up.
   */
  async #idOf(room: string): Promise<number | undefined> {
    const known = this.#ids.get(room);
    if (known !== undefined) return known;
    const row = await this.#db.selectFrom('rooms').select('id').where('name', '=', room).executeTakeFirst();
    if (row === undefined) return undefined;
    const id = Number(row.id);
    this.#ids.set(room, id);
    return id;
  }

  /** Stores a membership; the caller updates the index (`index`) in its turn. */
  async join(room: string, userId: number, now: number): Promise<void> {
    const roomId = await this.ensure(room, now);
    await this.#store.transaction((tx: Kysely<Tables>) =>
      tx
        .insertInto('room_members')
        .values({ room_id: roomId, user_id: userId, joined_at: now })
        .onConflict((oc) => oc.doNothing())
        .execute(),
    );
  }

  /**
   * Removes a membership; false when there was none (a concurrent leave of the
   * same user removed it first). The caller updates the index (`unindex`) in its turn.
   */
  async leave(room: string, userId: number): Promise<boolean> {
    const id = await this.#idOf(room);
    if (id === undefined) return false;
    const result = await this.#store.transaction((tx: Kysely<Tables>) =>
      tx.deleteFrom('room_members').where('room_id', '=', id).where('user_id', '=', userId).executeTakeFirst(),
    );
    return Number(result.numDeletedRows) > 0;
  }

  /**
   * Rooms nobody is in hold no memory here (their ids are read again when
   * someone joins or reads one): a user joining and leaving new names grew
   * these maps by a room per request, for good.
   */
  unindex(room: string, userId: number): void {
    const members = this.#members.get(room);
    members?.delete(userId);
    if (members?.size === 0) {
      this.#members.delete(room);
      this.#ids.delete(room);
    }
    const rooms = this.#byUser.get(userId);
    rooms?.delete(room);
    if (rooms?.size === 0) this.#byUser.delete(userId);
  }

  /**
   * Stores messages in one commit, their ids in the given order; durable when
   * it returns. Times never go backwards, so id order is time order. The
   * caller runs one call per room at a time (so within this process a room's
   * ids are taken in commit order); on PostgreSQL the room is locked
   * too, so that holds for several processes on one database. There, calls
   * made in one turn share a transaction (`#appendAll`), except under
   * `once`, whose own transaction this one joins.
   */
  async append(room: string, messages: readonly { user: string; text: string }[], now: number): Promise<RoomMessage[]> {
    const roomId = await this.ensure(room, now);
    const time = (this.#lastTime = Math.max(now, this.#lastTime));
    const append = { roomId, messages, time };
    // SQLite already commits a turn's transactions together, and gains nothing from one of its own
    if (!this.#postgres || this.#store.inTransaction()) return (await this.#appendAll([append]))[0]!;
    return this.#turn.add(append);
  }

  readonly #turn = new TurnBatch<Append, RoomMessage[]>((appends) => this.#appendAll(appends));

  #appendAll(appends: readonly Append[]): Promise<RoomMessage[][]> {
    if (this.#postgres) return this.#appendAllPostgres(appends);
    return this.#store.transaction(async (tx: Kysely<Tables>) => {
      const rows = appends.map(({ roomId, messages, time }) =>
        messages.map(({ user, text }) => this.#insert(tx, roomId, time, user, text)),
      );
      return Promise.all(rows.map((stored) => Promise.all(stored)));
    });
  }

  /**
   * The locks and the INSERT are written together without waiting for the
   * locks' answer: PostgreSQL's connection is pipelined, so they leave in
   * one write and run in order (the INSERT after every room is locked); one
   * round trip in all.
   */
  #appendAllPostgres(appends: readonly Append[]): Promise<RoomMessage[][]> {
    return this.#store.transaction(async (tx: Kysely<Tables>) => {
      const rooms = [...new Set(appends.map((a) => a.roomId))].sort((a, b) => a - b);
      const batch: Batch = { rooms: [], times: [], users: [], texts: [] };
      for (const { roomId, messages, time } of appends) {
        for (const { user, text } of messages) {
          batch.rooms.push(roomId);
          batch.times.push(time);
          batch.users.push(user);
          batch.texts.push(text);
        }
      }
      const locked = lockRooms.execute(tx, { rooms });
      const inserted = (this.#shared ? insertBatchInOrder : insertBatchAlone).execute(tx, batch);
      // both settle before the transaction ends (its rollback must not overtake them)
      const [lockResult, insertResult] = await Promise.allSettled([locked, inserted]);
      if (lockResult.status === 'rejected') throw lockResult.reason;
      if (insertResult.status === 'rejected') throw insertResult.reason;
      const rows = insertResult.value
        .map((r) => ({ id: Number(r.id), time: Number(r.time), room: Number(r.room_id), prev: r.prev === null ? 0 : Number(r.prev) }))
        .sort((a, b) => a.id - b.id);
      if (rows.length !== batch.texts.length) throw new Error(`room messages: ${rows.length} rows for ${batch.texts.length} messages`);
      // in a cluster each message names the one before it in its room (room-order.ts): the room's
      // newest before the statement for its first row here, then the row before it
      const lastInRoom = new Map<number, number>();
      let next = 0;
      return appends.map(({ messages }) =>
        messages.map(({ user, text }) => {
          const { id, time, room, prev } = rows[next++]!;
          this.#lastTime = Math.max(this.#lastTime, time);
          if (!this.#shared) return { id, time, user, text };
          const before = lastInRoom.get(room) ?? prev;
          lastInRoom.set(room, id);
          return { id, time, user, text, prev: before };
        }),
      );
    });
  }

  async #insert(tx: Kysely<Tables>, room: number, time: number, user: string, text: string): Promise<RoomMessage> {
    const row = await insertMessage.first(tx, { room, time, user, text });
    return { id: Number(row!.id), time, user, text };
  }


  /**
   * At most `max` messages, oldest first, and at most about `maxBytes` of
   * text: a page that reaches the byte bound stops there (`more`), keeping
   * the messages nearest where the query starts (the newest for `last` and
   * `before`, the oldest otherwise).
   */
  async history(room: string, mode: HistoryMode, n: readonly number[], max: number, maxBytes: number): Promise<HistoryPage> {
    const id = await this.#idOf(room);
    if (id === undefined) return { messages: [], more: false };
    let q = this.#db
      .selectFrom('room_messages')
      .select(['id', sql<number>`octet_length(${sql.ref('text')}) + octet_length(${sql.ref('user')})`.as('size')])
      .where('room_id', '=', id);
    let newestFirst = false;
    let limit = max;
    switch (mode) {
      case 'last':
        newestFirst = true;
        limit = n[0]!;
        break;
      case 'since':
        q = q.where('id', '>=', await this.#firstAt(id, n[0]!)).where('time', '>=', n[0]!);
        break;
      case 'after':
        q = q.where('id', '>', n[0]!);
        break;
      case 'before':
        q = q.where('id', '<', n[0]!);
        newestFirst = true;
        limit = n[1]!;
        break;
      case 'between': {
        const [from, to] = [await this.#firstAt(id, n[0]!), await this.#firstAt(id, n[1]!)];
        q = q.where('id', '>=', from).where('id', '<', to).where('time', '>=', n[0]!).where('time', '<', n[1]!);
        break;
      }
    }
    // sizes first, texts only for what fits: a page of big messages is never all read into memory
    const sizes = await q
      .orderBy('id', newestFirst ? 'desc' : 'asc')
      .limit(limit)
      .execute();
    const ids: number[] = [];
    let bytes = 0;
    for (const r of sizes) {
      const size = Number(r.size) + 40;
      if (ids.length > 0 && bytes + size > maxBytes) break;
      bytes += size;
      ids.push(Number(r.id));
    }
    if (ids.length === 0) return { messages: [], more: false };
    const rows = await this.#db.selectFrom('room_messages').select(['id', 'time', 'user', 'text']).where('id', 'in', ids).orderBy('id').execute();
    const messages = rows.map((r) => ({ id: Number(r.id), time: Number(r.time), user: r.user, text: r.text }));
    return { messages, more: ids.length < sizes.length };
  }

  /**
   * The id of the room's first message whose time is `time` or later, or
   * one past every id when there is none. A room's times never go backwards
   * in id order (`append`), so this is a binary search over ids in the
   * room's id index: about log2(newest id) one-row reads, instead of a
   * second index that every append would have to write. (The query still
   * filters by time, so rows of a database written before that rule was
   * kept are never shown outside their range.)
   */
  async #firstAt(room: number, time: number): Promise<number> {
    const firstFrom = (from: number, desc = false) =>
      this.#db
        .selectFrom('room_messages')
        .select(['id', 'time'])
        .where('room_id', '=', room)
        .where('id', desc ? '<=' : '>=', from)
        .orderBy('id', desc ? 'desc' : 'asc')
        .limit(1)
        .executeTakeFirst();
    const newest = await firstFrom(Number.MAX_SAFE_INTEGER, true);
    if (newest === undefined || Number(newest.time) < time) return Number.MAX_SAFE_INTEGER;
    // the answer is `best` or an id in [lo, hi]; each read halves that range
    let best = Number(newest.id);
    let lo = 0;
    let hi = best - 1;
    while (lo <= hi) {
      const mid = Math.floor((lo + hi) / 2);
      const row = await firstFrom(mid);
      const rowId = Number(row!.id); // exists: `best` is at or above mid
      if (rowId > hi) hi = mid - 1; // no message of the room in [mid, hi]
      else if (Number(row!.time) >= time) [best, hi] = [rowId, mid - 1];
      else lo = rowId + 1;
    }
    return best;
  }

  index(room: string, userId: number): void {
    let set = this.#members.get(room);
    if (set === undefined) this.#members.set(room, (set = new Set()));
    set.add(userId);
    let rooms = this.#byUser.get(userId);
    if (rooms === undefined) this.#byUser.set(userId, (rooms = new Set()));
    rooms.add(room);
  }
}
