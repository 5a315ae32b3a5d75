/**
 * Hot queries built and compiled once. Building a query with Kysely and
 * compiling it to SQL costs more JavaScript than SQLite takes to run a
 * small INSERT, and the hottest writes (a room message, an inbox entry) run
 * thousands of times a second with the same shape. A prepared query is
 * built once with placeholders, compiled once per dialect, and then only
 * its parameters change; it runs through the same Kysely executor (and so
 * the same connection, ambient transaction and driver) as a built one.
 *
 *     const insert = prepared<{ room: number; text: string }>((db, $) =>
 *       db.insertInto('messages').values({ room_id: $('room'), text: $('text') }).returning('id'));
 *     const rows = await insert.execute(tx, { room: 1, text: 'hi' });
 *
 * Only values may be placeholders (what Kysely would send as parameters),
 * never identifiers: a query whose shape depends on the values (a list for
 * `in`, a number of rows) is built each time instead.
 */
import type { CompiledQuery, Compilable, Kysely } from 'kysely';
import { transactionConnection } from './ambient.ts';

/** A placeholder's stand-in while the query is compiled: no real value looks like it. */
const MARK = '\u0001prepared\u0001';

type Slot<A> = { readonly arg: keyof A } | { readonly value: unknown };

type Compiled<A> = { readonly template: CompiledQuery; readonly slots: readonly Slot<A>[] };

export type Prepared<A, O> = {
  /** Runs it with these values on `db` (a transaction's connection inside one); the rows it returns. */
  execute(db: Kysely<any>, args: A): Promise<O[]>;
  /** The first row, or undefined. */
  first(db: Kysely<any>, args: A): Promise<O | undefined>;
  /** Rows inserted, updated or deleted. */
  affected(db: Kysely<any>, args: A): Promise<number>;
};

export function prepared<A extends Record<string, unknown>, O = unknown>(
  build: (db: Kysely<any>, $: <K extends keyof A & string>(name: K) => A[K]) => Compilable<O>,
): Prepared<A, O> {
  // per dialect: keyed by the executor's adapter, which every Kysely instance of one store shares
  const byAdapter = new WeakMap<object, Compiled<A>>();
  const compiledFor = (db: Kysely<any>): Compiled<A> => {
    const adapter = db.getExecutor().adapter;
    let c = byAdapter.get(adapter);
    if (c === undefined) byAdapter.set(adapter, (c = compile(db, build)));
    return c;
  };
  const run = (db: Kysely<any>, args: A) => {
    const { template, slots } = compiledFor(db);
    const parameters = slots.map((s) => ('arg' in s ? args[s.arg] : s.value));
    const query: CompiledQuery = { ...template, parameters };
    // no plugin transforms queries or results (stores build Kysely without plugins), so inside a
    // transaction the query can go to its connection straight away
    return transactionConnection()?.executeQuery<O>(query) ?? db.executeQuery<O>(query);
  };
  return {
    execute: async (db, args) => (await run(db, args)).rows,
    first: async (db, args) => (await run(db, args)).rows[0],
    affected: async (db, args) => Number((await run(db, args)).numAffectedRows ?? 0n),
  };
}

/**
 * The SQL of every prepared query, each with a short name: a backend that
 * can keep a statement parsed and planned on its connection (PostgreSQL's
 * named statements) does so for these, and for nothing built each time
 * (whose texts vary without bound).
 */
const names = new Map<string, string>();

/** The name of a prepared query's SQL, or undefined for any other text. */
export function preparedName(sql: string): string | undefined {
  return names.get(sql);
}

function compile<A extends Record<string, unknown>, O>(
  db: Kysely<any>,
  build: (db: Kysely<any>, $: <K extends keyof A & string>(name: K) => A[K]) => Compilable<O>,
): Compiled<A> {
  const placeholders = new Set<string>();
  const template = build(db, (name) => {
    placeholders.add(name);
    return `${MARK}${name}` as never;
  }).compile();
  const seen = new Set<string>();
  const slots = template.parameters.map((p): Slot<A> => {
    if (typeof p !== 'string' || !p.startsWith(MARK)) return { value: p };
    const arg = p.slice(MARK.length);
    seen.add(arg);
    return { arg };
  });
  for (const name of placeholders) if (!seen.has(name)) throw new Error(`prepared query: placeholder ${name} is not a parameter of the SQL`);
  if (!names.has(template.sql)) names.set(template.sql, `textserver_${names.size + 1}`);
  return { template, slots };
}
