/**
 * The storage contract (STORAGE.md section 3), against the backend of this
 * test project: SQLite in the `sqlite` project, the throwaway PostgreSQL in
 * the `postgres` project. Servers are not involved: this is the seam itself.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { sql, type Generated, type Kysely } from 'kysely';
import pg from 'pg';
import { createLogger } from '../../src/log.ts';
import { openStore } from '../../src/store/open-store.ts';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';
import type { Migration, Store } from '../../src/store/store.ts';
import { prepared } from '../../src/store/prepared.ts';
import { removeDir, storeArgs, tempDir, testPostgres } from '../helpers/server.ts';

type Tables = { notes: { id: Generated<number>; body: string } };

const NOTES: Migration[] = [
  async ({ db, id }) => {
    await db.schema
      .createTable('notes')
      .addColumn('id', id.type, id.column)
      .addColumn('body', 'text', (c) => c.notNull())
      .execute();
  },
];

const log = createLogger('silent');
const open: Store[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
  for (const d of dirs.splice(0)) removeDir(d);
});

async function store(dir = tempDir()): Promise<Store> {
  dirs.push(dir);
  const args = await storeArgs(dir);
  const s = await openStore(args[1] ?? 'sqlite', dir, log);
  open.push(s);
  return s;
}

const backend = testPostgres() === undefined ? 'sqlite' : 'postgres';

describe(`store contract (${backend})`, () => {
  it('commits a transaction, and a read after it sees the write', async () => {
    const s = await store();
    await s.migrate('test', NOTES);
    const id = await s.transaction((tx: Kysely<Tables>) => tx.insertInto('notes').values({ body: 'hello' }).returning('id').executeTakeFirstOrThrow());
    const row = await (s.db as Kysely<Tables>).selectFrom('notes').selectAll().where('id', '=', id.id).executeTakeFirst();
    expect(row).toEqual({ id: id.id, body: 'hello' });
  });

  it('rolls back a transaction whose function throws: none of its writes remain', async () => {
    const s = await store();
    await s.migrate('test', NOTES);
    await expect(
      s.transaction(async (tx: Kysely<Tables>) => {
        await tx.insertInto('notes').values({ body: 'one' }).execute();
        await tx.insertInto('notes').values({ body: 'two' }).execute();
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    expect(await (s.db as Kysely<Tables>).selectFrom('notes').selectAll().execute()).toEqual([]);
  });

  it('runs concurrent transactions, each committed once; on SQLite they share fsyncs (group commit)', async () => {
    const s = await store();
    await s.migrate('test', NOTES);
    const before = s instanceof SqliteStore ? { ...s.stats } : undefined;
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        s.transaction((tx: Kysely<Tables>) =>
          tx
            .insertInto('notes')
            .values({ body: `n${i}` })
            .execute(),
        ),
      ),
    );
    const rows = await (s.db as Kysely<Tables>).selectFrom('notes').select('body').execute();
    expect(rows.map((r) => r.body).sort()).toEqual(Array.from({ length: 200 }, (_, i) => `n${i}`).sort());
    if (s instanceof SqliteStore) {
      // transactions of one turn share a COMMIT, and commits share fsyncs
      const commits = s.stats.commits - before!.commits;
      const fsyncs = s.stats.fsyncs - before!.fsyncs;
      expect(commits).toBeLessThan(200 / 4);
      expect(fsyncs).toBeLessThanOrEqual(commits);
    }
  });

  it('rolls back only the transaction that failed when concurrent ones share a commit', async () => {
    const s = await store();
    await s.migrate('test', NOTES);
    const results = await Promise.allSettled(
      ['a', 'b', 'c'].map((body) =>
        s.transaction(async (tx: Kysely<Tables>) => {
          await tx.insertInto('notes').values({ body }).execute();
          if (body === 'b') throw new Error('not b');
        }),
      ),
    );
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((await (s.db as Kysely<Tables>).selectFrom('notes').select('body').orderBy('body').execute()).map((r) => r.body)).toEqual(['a', 'c']);
  });

  it('joins a transaction opened inside another one: reads see its writes, and it commits or rolls back with it', async () => {
    const s = await store();
    await s.migrate('test', NOTES);
    const db = s.db as Kysely<Tables>;
    const seen = await s.transaction(async (tx: Kysely<Tables>) => {
      await tx.insertInto('notes').values({ body: 'outer' }).execute();
      await s.transaction((inner: Kysely<Tables>) => inner.insertInto('notes').values({ body: 'inner' }).execute());
      return (await db.selectFrom('notes').select('body').orderBy('id').execute()).map((r) => r.body);
    });
    expect(seen).toEqual(['outer', 'inner']);
    await expect(
      s.transaction(async () => {
        await s.transaction((inner: Kysely<Tables>) => inner.insertInto('notes').values({ body: 'lost' }).execute());
        throw new Error('outer fails');
      }),
    ).rejects.toThrow('outer fails');
    expect((await db.selectFrom('notes').select('body').orderBy('id').execute()).map((r) => r.body)).toEqual(['outer', 'inner']);
  });

  it('rolls back a joined transaction that fails alone when the outer one goes on', async () => {
    const s = await store();
    await s.migrate('test', NOTES);
    await s.transaction(async (tx: Kysely<Tables>) => {
      await tx.insertInto('notes').values({ body: 'kept' }).execute();
      await s
        .transaction(async (inner: Kysely<Tables>) => {
          await inner.insertInto('notes').values({ body: 'dropped' }).execute();
          throw new Error('inner fails');
        })
        .catch(() => {});
    });
    expect((await (s.db as Kysely<Tables>).selectFrom('notes').select('body').execute()).map((r) => r.body)).toEqual(['kept']);
  });

  it('runs afterCommit callbacks once the outermost transaction committed, in order, and never for a rolled-back one', async () => {
    const s = await store();
    await s.migrate('test', NOTES);
    const events: string[] = [];
    s.afterCommit(() => events.push('outside'));
    expect(events).toEqual(['outside']);
    await s.transaction(async (tx: Kysely<Tables>) => {
      await s.transaction((inner: Kysely<Tables>) => inner.insertInto('notes').values({ body: 'x' }).execute());
      s.afterCommit(() => events.push('first'));
      await tx.insertInto('notes').values({ body: 'y' }).execute();
      s.afterCommit(() => events.push('second'));
      events.push('body done');
    });
    expect(events).toEqual(['outside', 'body done', 'first', 'second']);
    await s
      .transaction(async () => {
        s.afterCommit(() => events.push('never'));
        throw new Error('rolled back');
      })
      .catch(() => {});
    expect(events).not.toContain('never');
  });

  it('applies each migration once, in order, and refuses a store newer than the code', async () => {
    const dir = tempDir();
    const s = await store(dir);
    const steps: Migration[] = [...NOTES, `INSERT INTO notes (body) VALUES ('seeded')`];
    await s.migrate('test', steps);
    await s.migrate('test', steps);
    expect((await (s.db as Kysely<Tables>).selectFrom('notes').select('body').execute()).map((r) => r.body)).toEqual(['seeded']);
    await expect(s.migrate('test', NOTES)).rejects.toThrow(/newer than this code/);
  });

  // one file, one process: PostgreSQL is where servers share a store
  it.runIf(backend === 'postgres')('migrates once when several stores start together on one database', async () => {
    const dir = tempDir();
    const first = await store(dir);
    const others = await Promise.all([store(dir), store(dir), store(dir)]);
    const steps: Migration[] = [...NOTES, `INSERT INTO notes (body) VALUES ('once')`];
    await Promise.all([first, ...others].map((s) => s.migrate('race', steps)));
    expect(await (first.db as Kysely<Tables>).selectFrom('notes').select('body').execute()).toEqual([{ body: 'once' }]);
  });

  // "acknowledged means durable" must not hang on the database's or role's defaults, nor on options the operator's URL brings;
  // nor may the isolation its locking is built for (read committed: a serializable default failed contended writes as `unhandled`)
  it.runIf(backend === 'postgres')('commits with synchronous_commit on, read committed, when the URL brings options of its own and the database defaults otherwise', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const url = (await storeArgs(dir))[1]!;
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    const db = new URL(url).pathname.slice(1);
    await admin
      .query(`ALTER DATABASE "${db}" SET synchronous_commit = off; ALTER DATABASE "${db}" SET default_transaction_isolation = 'serializable'`)
      .finally(() => admin.end());
    const s = await openStore(`${url}?options=${encodeURIComponent('-c search_path=public')}`, dir, log);
    open.push(s);
    const setting = (name: string) => s.transaction((tx) => sql.raw<Record<string, string>>(`SHOW ${name}`).execute(tx)).then((r) => r.rows[0]![name]);
    expect(await setting('synchronous_commit')).toBe('on');
    expect(await setting('transaction_isolation')).toBe('read committed');
    expect(await setting('search_path')).toBe('public');
  });

  it.runIf(backend === 'sqlite')('refuses a write outside a transaction on SQLite (it would be acknowledged before its fsync)', async () => {
    const s = await store();
    await s.migrate('test', NOTES);
    await expect((s.db as Kysely<Tables>).insertInto('notes').values({ body: 'x' }).execute()).rejects.toThrow(/store.transaction/);
  });

  it('keeps every text exactly, U+0000 included (PostgreSQL text cannot hold it: it is escaped there)', async () => {
    const s = await store();
    await s.migrate('test', NOTES);
    const odd = ['a\u0000b', '\uE000', '\uE0000', 'x\uE000\uE000\u0000y', 'plain'];
    for (const body of odd) await s.transaction((tx: Kysely<Tables>) => tx.insertInto('notes').values({ body }).execute());
    const db = s.db as Kysely<Tables>;
    expect((await db.selectFrom('notes').select('body').orderBy('id').execute()).map((r) => r.body)).toEqual(odd);
    expect(await db.selectFrom('notes').select('body').where('body', '=', 'a\u0000b').execute()).toEqual([{ body: 'a\u0000b' }]);
  });

  // under an operator's own statement_timeout, or another application's locks, a request is answered `unavailable` (try again), not `unhandled`
  it.runIf(backend === 'postgres')('answers unavailable for a query PostgreSQL gives up on, and stays up', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const url = (await storeArgs(dir))[1]!;
    const s = await openStore(`${url}?options=${encodeURIComponent('-c statement_timeout=100')}`, dir, log);
    open.push(s);
    const timedOut = await s.transaction((tx) => sql`SELECT pg_sleep(2)`.execute(tx)).catch((err: unknown) => err);
    expect((timedOut as { code?: string }).code).toBe('57014');
    const conflict = await s
      .transaction((tx) => sql.raw(`DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$`).execute(tx))
      .catch((err: unknown) => err);
    expect((conflict as { code?: string }).code).toBe('40001');
    for (const err of [timedOut, conflict]) expect(s.isFailure(err)).toBe(true);
    expect(s.up).toBe(true);
    expect(await s.transaction((tx) => sql<{ n: number }>`SELECT 1 AS n`.execute(tx)).then((r) => r.rows[0]!.n)).toBe(1);
  });

  // work a transaction's function started and did not await (a trim after a `once` key) outlives it: it must not join
  // the transaction that is committing (on PostgreSQL its SAVEPOINT reached the connection after the COMMIT and failed)
  it('a transaction begun in the call chain after the outer function returned runs on its own', async () => {
    const s = await store();
    await s.migrate('test', NOTES);
    let late: Promise<unknown> | undefined;
    await s.transaction(async (tx: Kysely<Tables>) => {
      await tx.insertInto('notes').values({ body: 'outer' }).execute();
      late = new Promise((resolve) => setImmediate(resolve)).then(() =>
        s.transaction((t: Kysely<Tables>) => t.insertInto('notes').values({ body: 'late' }).execute()),
      );
    });
    await late;
    expect((await (s.db as Kysely<Tables>).selectFrom('notes').select('body').orderBy('id').execute()).map((r) => r.body)).toEqual(['outer', 'late']);
  });

  it('tells a failing store from a bad query', async () => {
    const s = await store();
    const bad = await sql`SELECT * FROM no_such_table`.execute(s.db).catch((err: unknown) => err);
    expect(s.isFailure(bad)).toBe(false);
    expect(s.up).toBe(true);
  });
});

describe(`prepared queries (${backend})`, () => {
  const insert = prepared<{ body: string }, { id: number }>((db: Kysely<Tables>, $) => db.insertInto('notes').values({ body: $('body') }).returning('id'));
  const byBody = prepared<{ body: string; after: number }, { id: number; body: string }>((db: Kysely<Tables>, $) =>
    db.selectFrom('notes').select(['id', 'body']).where('body', '=', $('body')).where('id', '>', $('after')).orderBy('id'),
  );
  const rename = prepared<{ from: string; to: string }>((db: Kysely<Tables>, $) => db.updateTable('notes').set({ body: $('to') }).where('body', '=', $('from')));

  it("runs with each call's values, inside a transaction (seeing its writes) and outside", async () => {
    const s = await store();
    await s.migrate('test', NOTES);
    const ids = await s.transaction(async (tx) => {
      const a = await insert.first(tx, { body: 'one' });
      const b = await insert.first(tx, { body: 'two\u0000nul' });
      // a read in the transaction sees its own writes
      expect((await byBody.execute(tx, { body: 'one', after: 0 })).map((r) => r.id)).toEqual([a!.id]);
      return [a!.id, b!.id];
    });
    expect(ids[1]).toBeGreaterThan(ids[0]!);
    expect(await byBody.execute(s.db, { body: 'two\u0000nul', after: 0 })).toEqual([{ id: ids[1], body: 'two\u0000nul' }]);
    expect(await byBody.execute(s.db, { body: 'one', after: ids[0]! })).toEqual([]);
    expect(await s.transaction((tx) => rename.affected(tx, { from: 'one', to: 'uno' }))).toBe(1);
    expect(await byBody.first(s.db, { body: 'uno', after: 0 })).toEqual({ id: ids[0], body: 'uno' });
  });

  it('refuses a placeholder that does not become a parameter', async () => {
    const s = await store();
    await s.migrate('test', NOTES);
    const broken = prepared<{ table: string }>((db, $) => db.selectFrom('notes').select(sql.raw($('table')).as('x')));
    await expect(broken.execute(s.db, { table: 'id' })).rejects.toThrow(/not a parameter/);
  });
});
