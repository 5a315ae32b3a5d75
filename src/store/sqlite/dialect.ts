/**
 * Kysely over one node:sqlite connection. Statements are prepared once and
 * cached; one query runs at a time (a transaction holds the connection
 * until it ends, so nobody else's statement slips into it). Committing is
 * the store's business: this driver's COMMIT writes the WAL without an
 * fsync, and the store waits for a shared fsync before it acknowledges.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import {
  CompiledQuery,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
  type DatabaseConnection,
  type Dialect,
  type Driver,
  type Kysely,
  type QueryResult,
} from 'kysely';

const CACHE_LIMIT = 500;
const WRITES = new Set(['InsertQueryNode', 'UpdateQueryNode', 'DeleteQueryNode', 'MergeQueryNode']);

class Connection implements DatabaseConnection {
  readonly #db: DatabaseSync;
  readonly #cache = new Map<string, { stmt: StatementSync; reader: boolean }>();
  /** Called after every COMMIT. */
  readonly #onCommit: () => void;

  constructor(db: DatabaseSync, onCommit: () => void) {
    this.#db = db;
    this.#onCommit = onCommit;
  }

  #prepare(sql: string): { stmt: StatementSync; reader: boolean } {
    let entry = this.#cache.get(sql);
    if (entry === undefined) {
      const stmt = this.#db.prepare(sql);
      entry = { stmt, reader: stmt.columns().length > 0 };
      if (this.#cache.size >= CACHE_LIMIT) this.#cache.clear();
      this.#cache.set(sql, entry);
    }
    return entry;
  }

  executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    try {
      return Promise.resolve(this.#run<R>(compiled));
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  #run<R>(compiled: CompiledQuery): QueryResult<R> {
    const inTransaction = this.#db.isTransaction;
    if (!inTransaction && WRITES.has(compiled.query.kind)) {
      // an autocommitted write would be acknowledged before its fsync
      throw new Error('writes go through store.transaction()');
    }
    const { stmt, reader } = this.#prepare(compiled.sql);
    const params = compiled.parameters as (string | number | bigint | null | Uint8Array)[];
    if (reader) return { rows: stmt.all(...params) as R[] };
    const { changes, lastInsertRowid } = stmt.run(...params);
    if (compiled.sql === 'COMMIT') this.#onCommit();
    return { numAffectedRows: BigInt(changes), insertId: BigInt(lastInsertRowid), rows: [] };
  }

  async *streamQuery<R>(compiled: CompiledQuery): AsyncIterableIterator<QueryResult<R>> {
    yield this.#run<R>(compiled);
  }
}

/** A lock for the single connection: waiters are served in order. */
class Mutex {
  #locked = false;
  readonly #waiters: (() => void)[] = [];

  lock(): Promise<void> {
    if (!this.#locked) {
      this.#locked = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  unlock(): void {
    const next = this.#waiters.shift();
    if (next === undefined) this.#locked = false;
    else next();
  }
}

class SqliteDriver implements Driver {
  readonly #db: DatabaseSync;
  readonly #connection: Connection;
  readonly #mutex = new Mutex();

  constructor(db: DatabaseSync, onCommit: () => void) {
    this.#db = db;
    this.#connection = new Connection(db, onCommit);
  }

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    await this.#mutex.lock();
    return this.#connection;
  }

  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    // IMMEDIATE: take the write lock now, not at the first write, so a
    // transaction never fails half-way on a lock another process holds
    await connection.executeQuery(CompiledQuery.raw('BEGIN IMMEDIATE'));
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('COMMIT'));
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    // SQLite may have rolled back already (a failed COMMIT on a full disk does)
    if (this.#db.isTransaction) await connection.executeQuery(CompiledQuery.raw('ROLLBACK'));
  }

  async releaseConnection(): Promise<void> {
    this.#mutex.unlock();
  }

  async destroy(): Promise<void> {}
}

/** `onCommit` runs (synchronously) after each commit, before anyone else may run a statement. */
export function sqliteDialect(db: DatabaseSync, onCommit: () => void): Dialect {
  return {
    createAdapter: () => new SqliteAdapter(),
    createDriver: () => new SqliteDriver(db, onCommit),
    createIntrospector: (k: Kysely<any>) => new SqliteIntrospector(k),
    createQueryCompiler: () => new SqliteQueryCompiler(),
  };
}
