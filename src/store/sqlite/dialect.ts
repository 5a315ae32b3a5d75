/**
 * Kysely over one node:sqlite connection. Statements are prepared once and
 * cached; one query runs at a time (a transaction holds the connection
 * until it ends, so nobody else's statement slips into it).
 *
 * Transactions are batched: the first one of an event-loop turn opens a
 * SQLite transaction, and each (this one and those that follow in the same
 * turn) runs inside it as a savepoint, released when it ends or rolled back
 * alone when it fails. One COMMIT, queued behind them at the end of the
 * turn (setImmediate), writes the whole batch to the WAL at once: per
 * request that saves a BEGIN, a COMMIT and the WAL pages every COMMIT
 * writes, which is most of a small write's cost. A transaction is reported
 * done only once its batch's COMMIT ran (the store then waits for the
 * shared fsync, see GroupSync): if SQLite rolls a batch back (a full disk),
 * every transaction of it fails, so nothing of it is acknowledged.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { AmbientDriver, noteCommit } from '../ambient.ts';
import {
  type CompiledQuery,
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
  /** True inside a transaction (a savepoint of the batch): the only place writes are allowed. */
  logical = false;
  /** The last statement's failure, for the batch it may have rolled back. */
  lastError: Error | undefined;

  constructor(db: DatabaseSync) {
    this.#db = db;
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
      this.lastError = err as Error;
      return Promise.reject(err as Error);
    }
  }

  /** Rows changed by this connection since it opened (counting those rolled back). */
  totalChanges(): number {
    return Number((this.#prepare('SELECT total_changes() AS n').stmt.get() as { n: number | bigint }).n);
  }

  /** Runs a statement of the driver's own (transaction control), prepared once: they run several times per request. */
  exec(text: string): void {
    try {
      this.#prepare(text).stmt.run();
    } catch (err) {
      this.lastError = err as Error;
      throw err;
    }
  }

  #run<R>(compiled: CompiledQuery): QueryResult<R> {
    if (!this.logical && WRITES.has(compiled.query.kind)) {
      // an autocommitted write would be acknowledged before its fsync
      throw new Error('writes go through store.transaction()');
    }
    const { stmt, reader } = this.#prepare(compiled.sql);
    const params = compiled.parameters as (string | number | bigint | null | Uint8Array)[];
    if (reader) return { rows: stmt.all(...params) as R[] };
    const { changes, lastInsertRowid } = stmt.run(...params);
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

/** One SQLite transaction holding the savepoints of a turn's transactions. */
class Batch {
  readonly done: Promise<void>;
  /** SQLite's count of changed rows when the batch began: a batch that changed none needs no fsync. */
  changesBefore = 0;
  resolve!: () => void;
  reject!: (err: Error) => void;
  constructor() {
    this.done = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    // a batch whose transactions all rolled back has nobody waiting on it
    this.done.catch(() => {});
  }
}

class SqliteDriver implements Driver {
  readonly #db: DatabaseSync;
  readonly #connection: Connection;
  readonly #mutex = new Mutex();
  readonly #onCommit: () => void;
  #batch: Batch | undefined;
  /** While set, no new batch begins (see holdWrites). */
  #held: Promise<void> | undefined;
  #release: (() => void) | undefined;

  constructor(db: DatabaseSync, onCommit: () => void) {
    this.#db = db;
    this.#connection = new Connection(db);
    this.#onCommit = onCommit;
  }

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    await this.#mutex.lock();
    return this.#connection;
  }

  /**
   * For a read outside any transaction. The turn's batch is still open
   * (its transactions released, its COMMIT not yet run) and the connection
   * would show its writes; if that COMMIT then failed (a full disk) the
   * reader would have answered with rows that were never stored and whose
   * writers get `unavailable`. So the read commits the batch first, and
   * reads only what SQLite committed.
   */
  async acquireReadConnection(): Promise<DatabaseConnection> {
    await this.#mutex.lock();
    if (this.#batch !== undefined) this.#commitHeld(this.#batch);
    return this.#connection;
  }

  async beginTransaction(): Promise<void> {
    if (this.#batch === undefined) {
      // the mutex is ours: everything after this transaction waits with it, in order
      while (this.#held !== undefined) await this.#held;
      // IMMEDIATE: take the write lock now, not at the first write, so a
      // transaction never fails half-way on a lock another process holds
      this.#connection.exec('BEGIN IMMEDIATE');
      const batch = new Batch();
      batch.changesBefore = this.#connection.totalChanges();
      this.#batch = batch;
      setImmediate(() => void this.#commit(batch));
    }
    this.#connection.exec('SAVEPOINT batched');
    this.#connection.logical = true;
  }

  async commitTransaction(): Promise<void> {
    this.#connection.exec('RELEASE batched');
    this.#connection.logical = false;
    noteCommit(this.#batch!.done);
  }

  async rollbackTransaction(): Promise<void> {
    this.#connection.logical = false;
    if (this.#db.isTransaction) {
      this.#connection.exec('ROLLBACK TO batched');
      this.#connection.exec('RELEASE batched');
      return;
    }
    // SQLite rolled the whole batch back (a full disk, an I/O error): those released before fail too
    const batch = this.#batch;
    this.#batch = undefined;
    batch?.reject(this.#connection.lastError ?? new Error('the SQLite transaction was rolled back'));
  }

  async releaseConnection(): Promise<void> {
    this.#mutex.unlock();
  }

  /** Ends the turn's batch: queued behind the transactions already waiting, before those that come later. */
  async #commit(batch: Batch): Promise<void> {
    await this.#mutex.lock();
    try {
      // already committed by a read that came first
      if (this.#batch === batch) this.#commitHeld(batch);
    } finally {
      this.#mutex.unlock();
    }
  }

  /** COMMITs the open batch; the caller holds the mutex. */
  #commitHeld(batch: Batch): void {
    this.#batch = undefined;
    try {
      this.#connection.exec('COMMIT');
    } catch (err) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      batch.reject(err as Error);
      return;
    }
    // a batch of reads only (a replay's pages) waits for no fsync of its own
    if (this.#connection.totalChanges() !== batch.changesBefore) this.#onCommit();
    batch.resolve();
  }

  /**
   * Stops new batches from beginning (those that would wait at their BEGIN,
   * holding the connection, so order is kept) and settles once the open
   * batch, if any, has committed: from then on nothing is added to the WAL
   * until releaseWrites.
   */
  async holdWrites(): Promise<void> {
    if (this.#held === undefined) this.#held = new Promise((resolve) => (this.#release = resolve));
    await this.#batch?.done.catch(() => {});
  }

  releaseWrites(): void {
    const release = this.#release;
    this.#held = this.#release = undefined;
    release?.();
  }

  /** Settles once the open batch (if any) has committed. */
  flush(): Promise<void> {
    return this.#batch?.done ?? Promise.resolve();
  }

  async destroy(): Promise<void> {}
}

/**
 * `onCommit` runs (synchronously) after each batch's COMMIT, before anyone
 * else may run a statement; `flush` settles once the open batch committed.
 */
export function sqliteDialect(
  db: DatabaseSync,
  onCommit: () => void,
): { dialect: Dialect; driver: AmbientDriver; flush(): Promise<void>; writes: { hold(): Promise<void>; release(): void } } {
  const driver = new SqliteDriver(db, onCommit);
  const ambient = new AmbientDriver(driver);
  const dialect: Dialect = {
    createAdapter: () => new SqliteAdapter(),
    createDriver: () => ambient,
    createIntrospector: (k: Kysely<any>) => new SqliteIntrospector(k),
    createQueryCompiler: () => new SqliteQueryCompiler(),
  };
  const writes = { hold: () => driver.holdWrites(), release: () => driver.releaseWrites() };
  return { dialect, driver: ambient, flush: () => driver.flush(), writes };
}
