import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { ModuleDb } from '../core/module-api.ts';
import { nameKey, type Store, type StoredPush, type UserRecord } from './store.ts';

const CORE_MIGRATIONS = [
  `CREATE TABLE users (
     id INTEGER PRIMARY KEY,
     name TEXT NOT NULL,
     name_key TEXT NOT NULL UNIQUE,
     hash TEXT NOT NULL,
     created_at INTEGER NOT NULL
   );
   CREATE TABLE mailbox (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     user_id INTEGER NOT NULL REFERENCES users(id),
     payload TEXT NOT NULL,
     created_at INTEGER NOT NULL
   );
   CREATE INDEX mailbox_user ON mailbox(user_id, id);`,
];

/** node:sqlite in WAL mode with synchronous=FULL: a returned write is on disk. */
export class SqliteStore implements Store {
  readonly db: ModuleDb;
  readonly #sqlite: DatabaseSync;
  readonly #q: Record<string, StatementSync>;
  #closed = false;

  constructor(dataDir: string) {
    mkdirSync(dataDir, { recursive: true });
    this.#sqlite = new DatabaseSync(join(dataDir, 'textserver.db'));
    this.#sqlite.exec(`PRAGMA journal_mode = WAL;
      PRAGMA synchronous = FULL;
      PRAGMA foreign_keys = ON;
      PRAGMA busy_timeout = 5000;
      CREATE TABLE IF NOT EXISTS schema_versions (owner TEXT PRIMARY KEY, version INTEGER NOT NULL);`);
    const sqlite = this.#sqlite;
    this.db = {
      prepare: (sql) => sqlite.prepare(sql),
      exec: (sql) => sqlite.exec(sql),
      transaction: (fn) => this.#transaction(fn),
    };
    this.migrate('core', CORE_MIGRATIONS);
    const p = (sql: string) => sqlite.prepare(sql);
    this.#q = {
      findUser: p('SELECT id, name, hash FROM users WHERE name_key = ?'),
      userById: p('SELECT id, name, hash FROM users WHERE id = ?'),
      createUser: p('INSERT INTO users (name, name_key, hash, created_at) VALUES (?, ?, ?, ?) ON CONFLICT(name_key) DO NOTHING RETURNING id'),
      updateHash: p('UPDATE users SET hash = ? WHERE id = ?'),
      mailboxCount: p('SELECT count(*) AS n FROM mailbox WHERE user_id = ?'),
      mailboxAdd: p('INSERT INTO mailbox (user_id, payload, created_at) VALUES (?, ?, ?)'),
      mailboxAfter: p('SELECT id, payload FROM mailbox WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?'),
      mailboxDelete: p('DELETE FROM mailbox WHERE user_id = ? AND id <= ?'),
    };
  }

  findUser(key: string): UserRecord | undefined {
    return this.#q.findUser!.get(key) as UserRecord | undefined;
  }

  userById(id: number): UserRecord | undefined {
    return this.#q.userById!.get(id) as UserRecord | undefined;
  }

  createUser(name: string, hash: string): UserRecord | undefined {
    const row = this.#q.createUser!.get(name, nameKey(name), hash, Date.now()) as { id: number } | undefined;
    return row === undefined ? undefined : { id: Number(row.id), name, hash };
  }

  updateHash(id: number, hash: string): void {
    this.#q.updateHash!.run(hash, id);
  }

  mailboxCount(userId: number): number {
    return Number((this.#q.mailboxCount!.get(userId) as { n: number }).n);
  }

  mailboxAdd(userId: number, payload: string): void {
    this.#q.mailboxAdd!.run(userId, payload, Date.now());
  }

  mailboxAfter(userId: number, afterId: number, limit: number): StoredPush[] {
    return this.#q.mailboxAfter!.all(userId, afterId, limit) as StoredPush[];
  }

  mailboxDeleteUpTo(userId: number, lastId: number): void {
    this.#q.mailboxDelete!.run(userId, lastId);
  }

  migrate(owner: string, migrations: readonly string[]): void {
    const row = this.#sqlite.prepare('SELECT version FROM schema_versions WHERE owner = ?').get(owner) as
      | { version: number }
      | undefined;
    const applied = row === undefined ? 0 : Number(row.version);
    if (applied > migrations.length) {
      throw new Error(`the data directory has ${owner} schema version ${applied}, newer than this code's ${migrations.length}`);
    }
    for (let v = applied; v < migrations.length; v++) {
      this.#transaction(() => {
        this.#sqlite.exec(migrations[v]!);
        this.#sqlite
          .prepare('INSERT INTO schema_versions (owner, version) VALUES (?, ?) ON CONFLICT(owner) DO UPDATE SET version = excluded.version')
          .run(owner, v + 1);
      });
    }
  }

  #transaction<T>(fn: () => T): T {
    if (this.#sqlite.isTransaction) return fn();
    this.#sqlite.exec('BEGIN IMMEDIATE');
    try {
      const result = fn();
      this.#sqlite.exec('COMMIT');
      return result;
    } catch (err) {
      this.#sqlite.exec('ROLLBACK');
      throw err;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#sqlite.close();
  }
}
