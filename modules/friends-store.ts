/** The friends module's tables behind an asynchronous repository. */
import type { Generated, Kysely } from 'kysely';
import type { Migration, StoreApi } from '../src/core/module-api.ts';

type Tables = {
  friendships: { user_id: number; friend_id: number; since: number };
  friend_requests: { id: Generated<number>; from_id: number; to_id: number; created_at: number };
};

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

  constructor(store: StoreApi) {
    this.#store = store;
  }

  get #db(): Kysely<Tables> {
    return this.#store.db as Kysely<Tables>;
  }

  async areFriends(a: number, b: number): Promise<boolean> {
    return (await this.#db.selectFrom('friendships').select('since').where('user_id', '=', a).where('friend_id', '=', b).executeTakeFirst()) !== undefined;
  }

  async friendsOf(userId: number): Promise<number[]> {
    return (await this.#db.selectFrom('friendships').select('friend_id').where('user_id', '=', userId).execute()).map((r) => Number(r.friend_id));
  }

  async hasRequest(from: number, to: number): Promise<boolean> {
    return (await this.#db.selectFrom('friend_requests').select('id').where('from_id', '=', from).where('to_id', '=', to).executeTakeFirst()) !== undefined;
  }

  /** Who asked `to`, oldest first. */
  async requestsTo(to: number): Promise<number[]> {
    return (await this.#db.selectFrom('friend_requests').select('from_id').where('to_id', '=', to).orderBy('id').execute()).map((r) => Number(r.from_id));
  }

  async addRequest(from: number, to: number): Promise<void> {
    await this.#store.transaction((tx: Kysely<Tables>) =>
      tx
        .insertInto('friend_requests')
        .values({ from_id: from, to_id: to, created_at: Date.now() })
        .onConflict((oc) => oc.doNothing())
        .execute(),
    );
  }

  /** Drops a request; false when there was none. */
  async dropRequest(from: number, to: number): Promise<boolean> {
    const result = await this.#store.transaction((tx: Kysely<Tables>) =>
      tx.deleteFrom('friend_requests').where('from_id', '=', from).where('to_id', '=', to).executeTakeFirst(),
    );
    return Number(result.numDeletedRows) > 0;
  }

  /** Both directions of the friendship, and any request between the two, in one commit. */
  async befriend(a: number, b: number): Promise<void> {
    const now = Date.now();
    await this.#store.transaction(async (tx: Kysely<Tables>) => {
      await tx
        .deleteFrom('friend_requests')
        .where((eb) => eb.or([eb.and([eb('from_id', '=', a), eb('to_id', '=', b)]), eb.and([eb('from_id', '=', b), eb('to_id', '=', a)])]))
        .execute();
      await tx
        .insertInto('friendships')
        .values([
          { user_id: a, friend_id: b, since: now },
          { user_id: b, friend_id: a, since: now },
        ])
        .onConflict((oc) => oc.doNothing())
        .execute();
    });
  }

  /** False when they were not friends. */
  async unfriend(a: number, b: number): Promise<boolean> {
    const result = await this.#store.transaction((tx: Kysely<Tables>) =>
      tx
        .deleteFrom('friendships')
        .where((eb) => eb.or([eb.and([eb('user_id', '=', a), eb('friend_id', '=', b)]), eb.and([eb('user_id', '=', b), eb('friend_id', '=', a)])]))
        .executeTakeFirst(),
    );
    return Number(result.numDeletedRows) > 0;
  }
}
