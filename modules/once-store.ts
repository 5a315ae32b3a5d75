/**
 * The once module's table: one row per (user, key) used within
 * `--once-ttl`, holding the reply the command got, so a repeat returns it.
 */
import type { Kysely } from 'kysely';
import type { Migration, StoreApi } from '../src/core/module-api.ts';

type Tables = { once_keys: { user_id: number; key: string; reply: string; created_at: number } };

/** What a command answered: reply fields (`null`: `ok`), or an error's type and info. */
export type Outcome = { readonly reply: readonly string[] | null } | { readonly error: string; readonly info: string };

export const ONCE_MIGRATIONS: readonly Migration[] = [
  async ({ db }) => {
    await db.schema
      .createTable('once_keys')
      .addColumn('user_id', 'bigint', (c) => c.notNull())
      .addColumn('key', 'text', (c) => c.notNull())
      .addColumn('reply', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addPrimaryKeyConstraint('once_keys_pk', ['user_id', 'key'])
      .execute();
    await db.schema.createIndex('once_keys_age').on('once_keys').column('created_at').execute();
  },
  // a user's newest keys, for trim (--once-max-keys)
  async ({ db }) => {
    await db.schema.createIndex('once_keys_by_user_age').on('once_keys').columns(['user_id', 'created_at']).execute();
  },
];

export class OnceStore {
  readonly #store: StoreApi;

  constructor(store: StoreApi) {
    this.#store = store;
  }

  /**
   * Within `tx`: claims the key for a run (true), or hands back the
   * outcome recorded within the TTL. On PostgreSQL a claim by another
   * node's open transaction makes this wait for it to end.
   */
  async claim(tx: Kysely<any>, userId: number, key: string, now: number, ttlMs: number): Promise<true | Outcome> {
    const t = tx as Kysely<Tables>;
    const inserted = await t
      .insertInto('once_keys')
      .values({ user_id: userId, key, reply: '', created_at: now })
      .onConflict((oc) => oc.columns(['user_id', 'key']).doNothing())
      .returning('key')
      .executeTakeFirst();
    if (inserted !== undefined) return true;
    const row = await t.selectFrom('once_keys').select(['reply', 'created_at']).where('user_id', '=', userId).where('key', '=', key).executeTakeFirstOrThrow();
    if (Number(row.created_at) > now - ttlMs) return JSON.parse(row.reply) as Outcome;
    // expired (the sweep has not dropped it yet): a first use again
    await t.updateTable('once_keys').set({ reply: '', created_at: now }).where('user_id', '=', userId).where('key', '=', key).execute();
    return true;
  }

  /** The outcome recorded for the key within the TTL, if any (a read; claims nothing). */
  async recorded(userId: number, key: string, now: number, ttlMs: number): Promise<Outcome | undefined> {
    const row = await (this.#store.db as Kysely<Tables>)
      .selectFrom('once_keys')
      .select(['reply', 'created_at'])
      .where('user_id', '=', userId)
      .where('key', '=', key)
      .executeTakeFirst();
    return row !== undefined && row.reply !== '' && Number(row.created_at) > now - ttlMs ? (JSON.parse(row.reply) as Outcome) : undefined;
  }

  /** Within `tx`: the outcome of the claimed key's run, as JSON. */
  async record(tx: Kysely<any>, userId: number, key: string, outcome: string): Promise<void> {
    await (tx as Kysely<Tables>).updateTable('once_keys').set({ reply: outcome }).where('user_id', '=', userId).where('key', '=', key).execute();
  }

  /**
   * Forgets the user's keys older than its `keep` newest (those sharing the
   * oldest kept key's millisecond stay too): a user may not store keys at
   * the speed of its request budget for the whole TTL.
   */
  async trim(userId: number, keep: number): Promise<void> {
    const cut = await (this.#store.db as Kysely<Tables>)
      .selectFrom('once_keys')
      .select('created_at')
      .where('user_id', '=', userId)
      .orderBy('created_at', 'desc')
      .limit(1)
      .offset(keep - 1)
      .executeTakeFirst();
    if (cut === undefined) return;
    const before = Number(cut.created_at);
    await this.#store.transaction((tx: Kysely<Tables>) => tx.deleteFrom('once_keys').where('user_id', '=', userId).where('created_at', '<', before).execute());
  }

  /** Drops keys older than `before`; a read first, so an idle server writes nothing. */
  async expire(before: number): Promise<void> {
    // a TTL reaching back before 1970 (--once-ttl 1e300) forgets nothing, and is no bigint PostgreSQL takes
    if (before <= 0) return;
    const any = await (this.#store.db as Kysely<Tables>).selectFrom('once_keys').select('key').where('created_at', '<', before).limit(1).executeTakeFirst();
    if (any === undefined) return;
    await this.#store.transaction((tx: Kysely<Tables>) => tx.deleteFrom('once_keys').where('created_at', '<', before).execute());
  }
}
