/**
 * `--store sqlite`: one file in `--data`, WAL. The connection that reads and
 * writes lives on the main thread but never waits for the disk: it commits
 * with `synchronous = OFF` (the COMMIT is a write() into the WAL), and
 * `transaction` resolves only after GroupSync has fsync'd the WAL on the
 * thread pool, one fsync for every commit made while the previous one ran.
 * Checkpoints (copying the WAL into the database file, with its fsyncs) run
 * in a worker thread, when checkpoints.ts says. So acknowledged still means on disk, and a slow disk
 * slows acknowledgements, not the event loop.
 */
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { Kysely, sql } from 'kysely';
import type { Logger } from 'pino';
import { afterCommit, runTransaction, type AmbientDriver } from '../ambient.ts';
import { sqliteDialect } from './dialect.ts';
import { GroupSync } from './group-sync.ts';
import { Checkpoints, WAL_LIMITS, type WalLimits } from './checkpoints.ts';
import { lockDataDir, prepareDataDir } from './data-lock.ts';
import { migrate } from '../migrations.ts';
import type { Migration, Store } from '../store.ts';

/** SQLite result codes that mean the store (not the query) failed: busy, I/O, full, read-only... */
const FAILURE_CODES = new Set([5, 6, 7, 8, 10, 11, 13, 14, 15, 26]);

export class SqliteStore implements Store {
  readonly dialect = 'sqlite' as const;
  readonly db: Kysely<any>;
  readonly file: string;
  readonly #sqlite: DatabaseSync;
  #walFd!: number;
  #sync!: GroupSync;
  #checkpoints!: Checkpoints;
  readonly #log: Logger;
  readonly #flush: () => Promise<void>;
  readonly #driver: AmbientDriver;
  readonly #lock: { release(): void };
  #probe: NodeJS.Timeout | undefined;
  #up = true;
  /** After a failed fsync: the kernel may have dropped the pages it could not write, so no later fsync vouches for them. */
  #poisoned: Error | undefined;
  #closed = false;

  readonly #limits: WalLimits;

  constructor(dataDir: string, log: Logger, limits: WalLimits = WAL_LIMITS) {
    this.#log = log;
    this.#limits = limits;
    prepareDataDir(dataDir);
    this.#lock = lockDataDir(dataDir);
    this.file = join(dataDir, 'textserver.db');
    try {
      this.#sqlite = new DatabaseSync(this.file);
    } catch (err) {
      this.#lock.release();
      throw err;
    }
    try {
      this.#open();
    } catch (err) {
      this.#sqlite.close();
      this.#lock.release();
      throw err;
    }
    const { dialect, driver, flush, writes } = sqliteDialect(this.#sqlite, () => {
      this.#sync.committed();
      this.#checkpoints.committed();
    });
    this.db = new Kysely<any>({ dialect });
    this.#driver = driver;
    this.#flush = flush;
    this.#checkpoints = new Checkpoints(this.file, log, writes, limits);
  }

  /** The pragmas, the WAL made to exist and synced: what can fail on a bad file (not a database, read-only). */
  #open(): void {
    const dataDir = dirname(this.file);
    this.#sqlite.exec(`PRAGMA journal_mode = WAL;
      PRAGMA synchronous = OFF;
      PRAGMA wal_autocheckpoint = 0;
      PRAGMA journal_size_limit = ${2 * this.#limits.restartBytes};
      PRAGMA foreign_keys = ON;
      PRAGMA busy_timeout = 5000;`);
    // the WAL exists once something was written; make sure it does, and that its name is on disk
    this.#sqlite.exec('BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS schema_versions (owner TEXT PRIMARY KEY, version INTEGER NOT NULL); COMMIT;');
    this.#walFd = openSync(`${this.file}-wal`, 'r');
    fsyncSync(this.#walFd);
    syncDirectory(dataDir);
    this.#sync = new GroupSync(this.#walFd, (err) => this.#fsyncFailed(err));
  }

  get up(): boolean {
    return this.#up && !this.#poisoned;
  }

  get stats(): { fsyncs: number; commits: number } {
    return this.#sync.stats;
  }

  transaction<R>(fn: (tx: Kysely<any>) => Promise<R>): Promise<R> {
    if (this.#poisoned !== undefined) return Promise.reject(this.#poisoned);
    // success here does not set `up`: a transaction that wrote nothing (a login) commits on a full
    // disk too; only the probe's write says the disk takes writes again
    const done = runTransaction(this.db, this.#driver, fn, async (committed) => {
      await committed;
      await this.#sync.durable();
    });
    // a failure in work no request waits on (a mailbox drain, a sweep) marks the store down too (readiness)
    done.catch((err: unknown) => this.isFailure(err));
    return done;
  }

  afterCommit(fn: () => void): void {
    afterCommit(fn);
  }

  migrate(owner: string, migrations: readonly Migration[]): Promise<void> {
    return migrate(
      {
        dialect: 'sqlite',
        transaction: (fn) => this.transaction(fn),
        // the transaction holds the connection, so exec joins it
        script: async (_tx, text) => this.#sqlite.exec(text),
        lock: async () => {},
      },
      owner,
      migrations,
    );
  }

  isFailure(err: unknown): boolean {
    if (typeof err !== 'object' || err === null) return false;
    const e = err as { code?: string; errcode?: number; syscall?: string };
    if (e.code === 'ERR_SQLITE_ERROR' && e.errcode !== undefined) {
      const failed = FAILURE_CODES.has(e.errcode & 0xff);
      if (failed) this.#failed(err as Error);
      return failed;
    }
    return e.syscall === 'fdatasync'; // GroupSync's own failure
  }

  /**
   * A failed fsync is not retried (as PostgreSQL, which stops): Linux may
   * have marked the pages it failed to write clean, so a later fsync that
   * succeeds proves nothing about them. Writes answer unavailable until
   * the server restarts and SQLite recovers from what is really on disk.
   */
  #fsyncFailed(err: Error): void {
    if (this.#poisoned === undefined) this.#log.fatal({ err: err.message }, 'fsync of the WAL failed: writes answer unavailable until the server is restarted');
    this.#poisoned = err;
    this.#up = false;
  }

  #failed(err: Error): void {
    if (this.#up) this.#log.error({ err: err.message }, 'storage failed: writes answer unavailable until it recovers');
    this.#up = false;
    this.#probeSoon();
  }

  /** While down, a small durable write every second tells when the disk takes writes again (readiness). */
  #probeSoon(): void {
    if (this.#probe !== undefined || this.#closed) return;
    this.#probe = setTimeout(() => {
      this.#probe = undefined;
      if (this.#up || this.#closed) return;
      this.transaction((tx) => sql`UPDATE schema_versions SET version = version WHERE owner = 'core'`.execute(tx)).then(
        () => {
          this.#up = true;
          this.#log.info('storage writes again');
        },
        () => this.#probeSoon(),
      );
    }, 1000);
    this.#probe.unref();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#probe);
    await this.#flush().catch(() => {});
    await this.#sync.durable().catch(() => {});
    await this.#checkpoints.close();
    // writes made while closing (a last-seen time at logout) may have opened another batch
    for (let i = 0; i < 10 && this.#sqlite.isTransaction; i++) await this.#flush().catch(() => {});
    if (this.#sqlite.isTransaction) this.#sqlite.exec('ROLLBACK'); // still running: never acknowledged
    // a clean close checkpoints and removes the WAL, with a FULL sync
    this.#sqlite.exec('PRAGMA synchronous = FULL');
    this.#sqlite.close();
    closeSync(this.#walFd);
    this.#lock.release();
  }
}

/** A new file's name is durable only once its directory is synced. */
function syncDirectory(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // some file systems refuse to sync a directory; nothing more can be done there
  }
}
