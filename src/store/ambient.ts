/**
 * Ambient transactions. A transaction opened inside another one's async
 * call chain joins it (as a savepoint, so a failing inner part rolls back
 * alone), reads made in that chain run on its connection and see its
 * writes, and `afterCommit` callbacks wait for the outermost commit to be
 * durable. `once` needs this (DELIVERY.md): it wraps a whole command in
 * one transaction so that the command's writes and its recorded reply
 * commit together, and the pushes those writes cause go out only after.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { sql, type CompiledQuery, type DatabaseConnection, type Driver, type Kysely, type QueryResult, type TransactionSettings } from 'kysely';

type Open = {
  /** The connection the transaction runs on, once it has begun; undefined again once it ended. */
  conn: DatabaseConnection | undefined;
  /** Settles once the transaction's commit ran (a backend that batches commits sets it). */
  committed: Promise<void> | undefined;
  readonly after: (() => void)[];
  savepoints: number;
  /**
   * Its function has returned (or thrown): the COMMIT or ROLLBACK is on its
   * way. Work of its call chain that outlives the function (a trim started
   * and not awaited) no longer joins it: on PostgreSQL its SAVEPOINT would
   * reach the connection after the COMMIT, outside any transaction, and fail.
   */
  closing: boolean;
};

const current = new AsyncLocalStorage<Open>();

/** The open transaction of this call chain, if any (its afterCommit callbacks wait for it until it has ended). */
function open(): Open | undefined {
  const a = current.getStore();
  return a?.conn === undefined ? undefined : a;
}

/** The open transaction of this call chain that queries and transactions may still join: not one that is ending. */
function joinable(): Open | undefined {
  const a = open();
  return a?.closing === true ? undefined : a;
}

/**
 * The connection of the open transaction of this call chain, for a query
 * already compiled (prepared.ts) to run on directly: Kysely's executor adds
 * several promise hops per query (connection provider, driver, result
 * transform) that cost more than a small INSERT takes SQLite to run.
 */
export function transactionConnection(): DatabaseConnection | undefined {
  return joinable()?.conn;
}

/** For a backend whose commit completes after the transaction's own code (SQLite's batches). */
export function noteCommit(committed: Promise<void>): void {
  const a = current.getStore();
  if (a !== undefined) a.committed = committed;
}

/** True inside a transaction's own call chain (the SQLite driver refuses writes elsewhere). */
export function inAmbientTransaction(): boolean {
  return joinable() !== undefined;
}

/**
 * Runs `fn` in a transaction of `db`, or in the open one of this call chain.
 * A new transaction resolves only after `durable` (the store's wait for its
 * commit to reach the disk), then runs the `afterCommit` callbacks queued in
 * it, in order; a rolled-back one drops them.
 */
export async function runTransaction<R>(
  db: Kysely<any>,
  driver: AmbientDriver,
  fn: (tx: Kysely<any>) => Promise<R>,
  durable: (committed: Promise<void> | undefined) => Promise<void>,
): Promise<R> {
  const outer = joinable();
  if (outer !== undefined) return joined(db, outer, fn);
  const mine: Open = { conn: undefined, committed: undefined, after: [], savepoints: 0, closing: false };
  let result: R;
  try {
    result = await current.run(mine, () => driver.transaction(db, fn));
  } finally {
    // continuations still running in this chain later must not borrow a connection given back
    mine.conn = undefined;
  }
  await durable(mine.committed);
  for (const callback of mine.after) {
    try {
      callback();
    } catch {
      // a push that throws must not turn a durable write into a failed request
    }
  }
  return result;
}

async function joined<R>(db: Kysely<any>, outer: Open, fn: (tx: Kysely<any>) => Promise<R>): Promise<R> {
  const name = `ambient_${++outer.savepoints}`;
  await sql.raw(`SAVEPOINT ${name}`).execute(db);
  let result: R;
  try {
    result = await fn(db);
  } catch (err) {
    if (outer.conn !== undefined) {
      await sql.raw(`ROLLBACK TO SAVEPOINT ${name}`).execute(db);
      await sql.raw(`RELEASE SAVEPOINT ${name}`).execute(db);
    }
    throw err;
  }
  await sql.raw(`RELEASE SAVEPOINT ${name}`).execute(db);
  return result;
}

/** Runs `fn` once the open transaction of this call chain is durable; at once when there is none. */
export function afterCommit(fn: () => void): void {
  const a = open();
  if (a === undefined) fn();
  else a.after.push(fn);
}

/** The connection of an open transaction, lent to a read or a joined transaction: giving it back does nothing. */
class Borrowed implements DatabaseConnection {
  readonly #inner: DatabaseConnection;
  constructor(inner: DatabaseConnection) {
    this.#inner = inner;
  }
  executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    return this.#inner.executeQuery<R>(compiled);
  }
  streamQuery<R>(compiled: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
    return this.#inner.streamQuery<R>(compiled, chunkSize);
  }
}

/** Wraps a backend's driver so that queries in a transaction's call chain use its connection. */
/** A backend whose connection may hold writes not yet committed asks to know which acquisitions are reads outside a transaction. */
type InnerDriver = Driver & { acquireReadConnection?(): Promise<DatabaseConnection> };

export class AmbientDriver implements Driver {
  readonly #inner: InnerDriver;
  constructor(inner: InnerDriver) {
    this.#inner = inner;
  }
  init(): Promise<void> {
    return this.#inner.init();
  }
  async acquireConnection(): Promise<DatabaseConnection> {
    const a = joinable();
    if (a?.conn !== undefined) return new Borrowed(a.conn);
    return this.#inner.acquireReadConnection !== undefined ? this.#inner.acquireReadConnection() : this.#inner.acquireConnection();
  }
  /**
   * What Kysely's `db.transaction().execute(fn)` does, without building a
   * Kysely instance for each transaction (a measurable share of a small
   * write's cost): `fn` gets `db` itself, whose queries in this call chain
   * run on the transaction's connection (acquireConnection above). Call it
   * once Kysely has initialized the driver (a store's first query).
   */
  async transaction<R>(db: Kysely<any>, fn: (tx: Kysely<any>) => Promise<R>): Promise<R> {
    const c = await this.#inner.acquireConnection();
    try {
      await this.beginTransaction(c, {});
      let result: R;
      try {
        result = await fn(db);
      } catch (err) {
        this.#closing(c);
        await this.#inner.rollbackTransaction(c);
        throw err;
      }
      this.#closing(c);
      await this.#inner.commitTransaction(c);
      return result;
    } finally {
      await this.#inner.releaseConnection(c);
    }
  }

  /** The transaction on `c` of this call chain ends: nothing joins it any more. */
  #closing(c: DatabaseConnection): void {
    const a = current.getStore();
    if (a !== undefined && a.conn === c) a.closing = true;
  }

  async beginTransaction(c: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    await this.#inner.beginTransaction(c, settings);
    const a = current.getStore();
    if (a !== undefined && a.conn === undefined) a.conn = c;
  }
  commitTransaction(c: DatabaseConnection): Promise<void> {
    return this.#inner.commitTransaction(c);
  }
  rollbackTransaction(c: DatabaseConnection): Promise<void> {
    return this.#inner.rollbackTransaction(c);
  }
  async releaseConnection(c: DatabaseConnection): Promise<void> {
    if (c instanceof Borrowed) return;
    await this.#inner.releaseConnection(c);
  }
  destroy(): Promise<void> {
    return this.#inner.destroy();
  }
}
