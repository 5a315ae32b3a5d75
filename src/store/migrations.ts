/**
 * Versioned migrations per owner (`core`, `module:rooms`, ...), shared by
 * both backends: each step runs in its own transaction together with the
 * version bump, so a crash leaves either both or neither. `lock` runs first
 * in every transaction (PostgreSQL takes an advisory lock there, so several
 * servers starting at once apply each step once).
 */
import { sql, type Kysely } from 'kysely';
import type { Dialect, Migration, MigrationContext } from './store.ts';

export type MigrationRunner = {
  readonly dialect: Dialect;
  transaction<R>(fn: (tx: Kysely<any>) => Promise<R>): Promise<R>;
  /** Runs a multi-statement SQL script inside the current transaction. */
  script(tx: Kysely<any>, text: string): Promise<void>;
  lock(tx: Kysely<any>): Promise<void>;
};

export async function migrate(runner: MigrationRunner, owner: string, migrations: readonly Migration[]): Promise<void> {
  for (;;) {
    const done = await runner.transaction(async (tx) => {
      await runner.lock(tx);
      // PostgreSQL checks the CREATE privilege even when the table exists: a role that may only read and
      // write (the schema made by its owner) must still start once every step is applied
      if (runner.dialect === 'sqlite' || !(await versionsTableExists(tx))) {
        await sql`CREATE TABLE IF NOT EXISTS schema_versions (owner TEXT PRIMARY KEY, version INTEGER NOT NULL)`.execute(tx);
      }
      const row = await tx.selectFrom('schema_versions').select('version').where('owner', '=', owner).executeTakeFirst();
      const applied = row === undefined ? 0 : Number(row.version);
      if (applied > migrations.length) {
        throw new Error(`the store has ${owner} schema version ${applied}, newer than this code's ${migrations.length}`);
      }
      if (applied === migrations.length) return true;
      const step = migrations[applied]!;
      if (typeof step === 'string') await runner.script(tx, step);
      else await step(context(runner.dialect, tx));
      await tx
        .insertInto('schema_versions')
        .values({ owner, version: applied + 1 })
        .onConflict((oc) => oc.column('owner').doUpdateSet({ version: applied + 1 }))
        .execute();
      return false;
    });
    if (done) return;
  }
}

/** PostgreSQL: the table in the schema the connection's search_path creates in. */
async function versionsTableExists(tx: Kysely<any>): Promise<boolean> {
  const { rows } = await sql<{ found: boolean }>`SELECT to_regclass('schema_versions') IS NOT NULL AS found`.execute(tx);
  return rows[0]?.found === true;
}

function context(dialect: Dialect, db: Kysely<any>): MigrationContext {
  return {
    db,
    dialect,
    id:
      dialect === 'sqlite'
        ? { type: 'integer', column: (col) => col.primaryKey().autoIncrement() as typeof col }
        : { type: 'bigint', column: (col) => col.generatedByDefaultAsIdentity().primaryKey() as typeof col },
  };
}
