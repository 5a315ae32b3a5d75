/**
 * The core's own tables (accounts, stored messages) and their queries, in
 * Kysely, so the same code runs on both backends.
 */
import type { Generated, Kysely } from 'kysely';
import { INBOX_MIGRATION, INBOX_PENDING_MIGRATION } from './inbox-data.ts';
import type { Migration, Store } from './store.ts';

export type UserRecord = { readonly id: number; readonly name: string; readonly hash: string };

type CoreTables = {
  users: { id: Generated<number>; name: string; name_key: string; hash: string; created_at: number };
  mailbox: { id: Generated<number>; user_id: number; payload: string; created_at: number };
};

export const CORE_MIGRATIONS: readonly Migration[] = [
  async ({ db, id }) => {
    await db.schema
      .createTable('users')
      .addColumn('id', id.type, id.column)
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('name_key', 'text', (c) => c.notNull().unique())
      .addColumn('hash', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema
      .createTable('mailbox')
      .addColumn('id', id.type, id.column)
      .addColumn('user_id', 'bigint', (c) => c.notNull().references('users.id'))
      .addColumn('payload', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('mailbox_user').on('mailbox').columns(['user_id', 'id']).execute();
  },
  // the per-user inbox (DELIVERY.md) replaces the mailbox: its rows become pending entries
  INBOX_MIGRATION,
  INBOX_PENDING_MIGRATION,
];

export class CoreData {
  readonly #store: Store;

  constructor(store: Store) {
    this.#store = store;
  }

  get #db(): Kysely<CoreTables> {
    return this.#store.db as Kysely<CoreTables>;
  }

  findUser(key: string): Promise<UserRecord | undefined> {
    return this.#db.selectFrom('users').select(['id', 'name', 'hash']).where('name_key', '=', key).executeTakeFirst();
  }

  userById(id: number): Promise<UserRecord | undefined> {
    return this.#db.selectFrom('users').select(['id', 'name', 'hash']).where('id', '=', id).executeTakeFirst();
  }

  /** Undefined when the name (case-insensitively) is taken. */
  async createUser(name: string, key: string, hash: string): Promise<UserRecord | undefined> {
    const row = await this.#store.transaction((tx: Kysely<CoreTables>) =>
      tx
        .insertInto('users')
        .values({ name, name_key: key, hash, created_at: Date.now() })
        .onConflict((oc) => oc.column('name_key').doNothing())
        .returning('id')
        .executeTakeFirst(),
    );
    return row === undefined ? undefined : { id: Number(row.id), name, hash };
  }

  async updateHash(id: number, hash: string): Promise<void> {
    await this.#store.transaction((tx: Kysely<CoreTables>) => tx.updateTable('users').set({ hash }).where('id', '=', id).execute());
  }
}
