/**
 * PostgreSQL's text cannot hold U+0000, which the protocol allows in any
 * field. Strings going in are escaped with a private-use character, and
 * strings coming out unescaped, so every text round-trips exactly and
 * equality (names, keys) still compares escaped with escaped. Strings
 * without either character (nearly all) pass through untouched.
 */
import { AmbientDriver } from '../ambient.ts';
import {
  CompiledQuery,
  PostgresDialect,
  type DatabaseConnection,
  type Driver,
  type PostgresDialectConfig,
  type QueryResult,
  type TransactionSettings,
} from 'kysely';

const ESC = '\uE000';
const NEEDS = /[\u0000\uE000]/;

export function escapeText(s: string): string {
  return NEEDS.test(s) ? s.replace(/[\u0000\uE000]/g, (c) => (c === '\0' ? `${ESC}0` : `${ESC}${ESC}`)) : s;
}

export function unescapeText(s: string): string {
  return s.includes(ESC) ? s.replace(/\uE000([0\uE000])/g, (_, c: string) => (c === '0' ? '\0' : ESC)) : s;
}

/** A string, or an array of them (a batch's values passed to `unnest`), holding a character to escape. */
function needsEscape(p: unknown): boolean {
  if (typeof p === 'string') return NEEDS.test(p);
  return Array.isArray(p) && p.some((x) => typeof x === 'string' && NEEDS.test(x));
}

function escapeParameter(p: unknown): unknown {
  if (typeof p === 'string') return escapeText(p);
  return Array.isArray(p) ? p.map((x: unknown) => (typeof x === 'string' ? escapeText(x) : x)) : p;
}

function unescapeRow(row: unknown): unknown {
  if (typeof row !== 'object' || row === null) return row;
  const r = row as Record<string, unknown>;
  for (const key in r) {
    const v = r[key];
    if (typeof v === 'string' && v.includes(ESC)) r[key] = unescapeText(v);
  }
  return r;
}

class NulSafeConnection implements DatabaseConnection {
  readonly inner: DatabaseConnection;
  constructor(inner: DatabaseConnection) {
    this.inner = inner;
  }

  async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    const params = compiled.parameters.some(needsEscape) ? compiled.parameters.map(escapeParameter) : compiled.parameters;
    const result = await this.inner.executeQuery<R>(params === compiled.parameters ? compiled : { ...compiled, parameters: params });
    for (const row of result.rows) unescapeRow(row);
    return result;
  }

  streamQuery<R>(compiled: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
    return this.inner.streamQuery<R>(compiled, chunkSize);
  }
}

class NulSafeDriver implements Driver {
  readonly #inner: Driver;
  readonly #wrapped = new WeakMap<DatabaseConnection, NulSafeConnection>();
  constructor(inner: Driver) {
    this.#inner = inner;
  }
  init(): Promise<void> {
    return this.#inner.init();
  }
  async acquireConnection(): Promise<DatabaseConnection> {
    const c = await this.#inner.acquireConnection();
    let w = this.#wrapped.get(c);
    if (w === undefined) this.#wrapped.set(c, (w = new NulSafeConnection(c)));
    return w;
  }
  readonly #begun = new WeakMap<DatabaseConnection, Promise<unknown>>();
  /**
   * The connections are pipelined (postgres-store.ts): BEGIN is sent without
   * waiting for its answer, so it travels with the transaction's first
   * statement and a transaction costs one round trip less. COMMIT checks it.
   */
  async beginTransaction(c: DatabaseConnection, s: TransactionSettings): Promise<void> {
    if (s.isolationLevel !== undefined || s.accessMode !== undefined) return this.#inner.beginTransaction(c, s);
    const begun = c.executeQuery(CompiledQuery.raw('begin'));
    begun.catch(() => {}); // answered through commitTransaction, or the next statement's own failure
    this.#begun.set(c, begun);
  }
  async commitTransaction(c: DatabaseConnection): Promise<void> {
    const begun = this.#begun.get(c);
    this.#begun.delete(c);
    await begun;
    return this.#inner.commitTransaction(c);
  }
  rollbackTransaction(c: DatabaseConnection): Promise<void> {
    this.#begun.delete(c);
    return this.#inner.rollbackTransaction(c);
  }
  releaseConnection(c: DatabaseConnection): Promise<void> {
    return this.#inner.releaseConnection(c instanceof NulSafeConnection ? c.inner : c);
  }
  destroy(): Promise<void> {
    return this.#inner.destroy();
  }
}

/** Kysely's PostgreSQL dialect, NUL-safe, with ambient transactions (ambient.ts). */
export class NulSafePostgresDialect extends PostgresDialect {
  constructor(config: PostgresDialectConfig) {
    super(config);
  }
  /** The driver Kysely was given (it creates one per Kysely instance): the store runs its transactions on it. */
  driver: AmbientDriver | undefined;
  override createDriver(): Driver {
    this.driver = new AmbientDriver(new NulSafeDriver(super.createDriver()));
    return this.driver;
  }
}
