/**
 * The friends module's tables behind an asynchronous repository. Every write
 * decides on what it read in its own transaction, with the pair locked on
 * PostgreSQL, so that several nodes on one database cannot interleave a
 * pair's checks and writes (CLUSTER.md): crossing requests make one friendship.
 */
import { PostgresAdapter, sql, type Generated, type Kysely } from 'kysely';
import type { Migration, StoreApi } from '../src/core/module-api.ts';

type Tables = {
  friendships: { user_id: number; friend_id: number; since: number };
  friend_requests: { id: Generated<number>; from_id: number; to_id: number; created_at: number };
};

/** What a friend request did. */
export type RequestOutcome = 'requested' | 'pending' | 'befriended' | 'already_friends';

export const FRIENDS_MIGRATIONS: readonly Migration[] = [
  async ({ db, id }) => {
    await db.schema
      .createTable('friendships')
      .addColumn('user_id', 'bigint', (c) => c.notNull())
      .addColumn('friend_id', 'bigint', (c) => c.notNull())
      .addColumn('since', 'bigint', (c) => c.notNull())
      .addPrimaryKeyConstraint('friendships_pk', ['user_id', 'friend_id'])
      .execute();
    await db.schema
      .createTable('friend_requests')
      .addColumn('id', id.type, id.column)
      .addColumn('from_id', 'bigint', (c) => c.notNull())
      .addColumn('to_id', 'bigint', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addUniqueConstraint('friend_requests_pair', ['from_id', 'to_id'])
      .execute();
    await db.schema.createIndex('friend_requests_to').on('friend_requests').columns(['to_id', 'id']).execute();
  },
];

export class FriendStore {
  readonly #store: StoreApi;
  /** SQLite has no row locks (and needs none: one process, one writer). */
  readonly #postgres: boolean;

  constructor(store: StoreApi) {
    this.#store = store;
    this.#postgres = store.db.getExecutor().adapter instanceof PostgresAdapter;
  }

  get #db(): Kysely<Tables> {
    return this.#store.db as Kysely<Tables>;
  }

  /**
   * Holds the pair until the transaction ends, whichever of the two asks: an
   * advisory lock keyed by the ordered pair, so no row has to exist to be locked
   * (a first request has none) and a transaction holds one lock, so none waits in a cycle.
   */
  async #lockPair(tx: Kysely<Tables>, a: number, b: number): Promise<void> {
    if (!this.#postgres) return;
    const key = `friends ${Math.min(a, b)} ${Math.max(a, b)}`;
    await sql`SELECT pg_advisory_xact_lock(hashtextextended(${key}, 0))`.execute(tx);
  }

  async areFriends(a: number, b: number, db: Kysely<Tables> = this.#db): Promise<boolean> {
    return (await db.selectFrom('friendships').select('since').where('user_id', '=', a).where('friend_id', '=', b).executeTakeFirst()) !== undefined;
  }

  async friendsOf(userId: number): Promise<number[]> {
    return (await this.#db.selectFrom('friendships').select('friend_id').where('user_id', '=', userId).execute()).map((r) => Number(r.friend_id));
  }

  async hasRequest(from: number, to: number, db: Kysely<Tables> = this.#db): Promise<boolean> {
    return (await db.selectFrom('friend_requests').select('id').where('from_id', '=', from).where('to_id', '=', to).executeTakeFirst()) !== undefined;
  }

  /** Who asked `to`, oldest first. */
  async requestsTo(to: number): Promise<number[]> {
    return (await this.#db.selectFrom('friend_requests').select('from_id').where('to_id', '=', to).orderBy('id').execute()).map((r) => Number(r.from_id));
  }

  /**
   * `from` asks `to`: a request from `to` already there is accepted instead
   * (`befriended`); a repeated request changes nothing (`pending`). Checked
   * and written in one transaction with the pair locked.
   */
  async request(from: number, to: number): Promise<RequestOutcome> {
    return this.#store.transaction(async (tx: Kysely<Tables>) => {
      await this.#lockPair(tx, from, to);
      if (await this.areFriends(from, to, tx)) return 'already_friends';
      if (await this.hasRequest(to, from, tx)) return (await this.#befriend(tx, from, to)) ? 'befriended' : 'already_friends';
      if (await this.hasRequest(from, to, tx)) return 'pending';
      await tx
        .insertInto('friend_requests')
        .values({ from_id: from, to_id: to, created_at: Date.now() })
        .onConflict((oc) => oc.doNothing())
        .execute();
      return 'requested';
    });
  }

  /**
   * `to` accepts `from`'s request. Null when there is none; else whether this
   * call made the friendship (false: they were friends already, so nobody is
   * told `added` again).
   */
  async accept(from: number, to: number): Promise<boolean | null> {
    return this.#store.transaction(async (tx: Kysely<Tables>) => {
      await this.#lockPair(tx, from, to);
      if (!(await this.hasRequest(from, to, tx))) return null;
      return this.#befriend(tx, from, to);
    });
  }

  /** Drops a request; false when there was none. */
  async dropRequest(from: number, to: number): Promise<boolean> {
    const result = await this.#store.transaction(async (tx: Kysely<Tables>) => {
      await this.#lockPair(tx, from, to);
      return tx.deleteFrom('friend_requests').where('from_id', '=', from).where('to_id', '=', to).executeTakeFirst();
    });
    return Number(result.numDeletedRows) > 0;
  }

  /**
   * Both directions of the friendship, and any request between the two, in
   * the caller's locked transaction; true when the friendship is new.
   */
  async #befriend(tx: Kysely<Tables>, a: number, b: number): Promise<boolean> {
    await tx
      .deleteFrom('friend_requests')
      .where((eb) => eb.or([eb.and([eb('from_id', '=', a), eb('to_id', '=', b)]), eb.and([eb('from_id', '=', b), eb('to_id', '=', a)])]))
      .execute();
    if (await this.areFriends(a, b, tx)) return false;
    const now = Date.now();
    await tx
      .insertInto('friendships')
      .values([
        { user_id: a, friend_id: b, since: now },
        { user_id: b, friend_id: a, since: now },
      ])
      .onConflict((oc) => oc.doNothing())
      .execute();
    return true;
  }

  /** False when they were not friends. */
  async unfriend(a: number, b: number): Promise<boolean> {
    const result = await this.#store.transaction(async (tx: Kysely<Tables>) => {
      await this.#lockPair(tx, a, b);
      return tx
        .deleteFrom('friendships')
        .where((eb) => eb.or([eb.and([eb('user_id', '=', a), eb('friend_id', '=', b)]), eb.and([eb('user_id', '=', b), eb('friend_id', '=', a)])]))
        .executeTakeFirst();
    });
    return Number(result.numDeletedRows) > 0;
  }
}
