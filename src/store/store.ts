/**
 * The storage seam (STORAGE.md): one asynchronous interface for everything
 * durable, with a SQLite and a PostgreSQL backend. Reads run at once;
 * writes run in `transaction`, which resolves only once the commit is
 * durable, and commits of concurrent transactions share one fsync (SQLite)
 * or one WAL flush (PostgreSQL). The core and every module build their
 * queries with Kysely, which compiles them to either dialect.
 */
import type { Kysely } from 'kysely';

export type Dialect = 'sqlite' | 'postgres';

/** What a migration gets: the transaction it runs in, and the one thing dialects spell differently. */
export type MigrationContext = {
  readonly db: Kysely<any>;
  readonly dialect: Dialect;
  /** The type and modifiers of an auto-increment primary key: `.addColumn('id', m.id.type, m.id.column)`. */
  readonly id: { readonly type: 'integer' | 'bigint'; readonly column: <C extends IdColumn>(col: C) => C };
};

type IdColumn = { primaryKey(): IdColumn; autoIncrement(): IdColumn; generatedByDefaultAsIdentity(): IdColumn };

/**
 * One schema step, applied once, in order, in its own transaction. A string
 * is SQL both dialects accept (statements separated by `;`); a function uses
 * Kysely's schema builder.
 */
export type Migration = string | ((m: MigrationContext) => Promise<void>);

export interface Store {
  readonly dialect: Dialect;
  /** Reads. A write outside `transaction` is refused: it would be acknowledged before it is durable. */
  readonly db: Kysely<any>;
  /**
   * Runs `fn` in one transaction and resolves once its commit is durable;
   * rolls back when `fn` throws. Called inside another transaction's async
   * call chain, it joins that one (a savepoint) and commits with it; reads
   * in that chain see its writes.
   */
  transaction<R>(fn: (tx: Kysely<any>) => Promise<R>): Promise<R>;
  /** Runs `fn` once the open transaction of this call chain is durable (dropped if it rolls back); at once outside one. */
  afterCommit(fn: () => void): void;
  /** Applies the owner's migrations not yet applied (once, even with several servers starting together). */
  migrate(owner: string, migrations: readonly Migration[]): Promise<void>;
  /**
   * True when `err` is the store failing (disk full, I/O error, database
   * gone; the store is then down until it answers again), or a database
   * giving up on one request's query (a timeout, a serialization failure:
   * the store stays up): either way the request answers `unavailable`. False
   * for a bad query, which is a bug.
   */
  isFailure(err: unknown): boolean;
  /** False from a failed commit or connection until the store answers again. */
  readonly up: boolean;
  close(): Promise<void>;
}

/**
 * The case-insensitive key of a user name. Only A-Z fold: names are ASCII
 * (PROTOCOL.md), and a full Unicode fold would let a name that could never
 * be registered reach an account (U+212A KELVIN SIGN lowers to `k`).
 */
export function nameKey(name: string): string {
  return name.replace(/[A-Z]+/g, (upper) => upper.toLowerCase());
}
