/**
 * One process per SQLite data directory. The SQLite store is one process's
 * (its membership index, presence and inbox live in memory, and its group
 * commit fsyncs the WAL itself), so a second server on the same `--data`
 * would run beside the first without either noticing. The lock is an
 * exclusive SQLite lock on a file of its own (`textserver.lock`): the
 * kernel drops it when the process dies, so a killed server never leaves a
 * stale lock, and the store's own file stays free for the checkpointer and
 * for `sqlite3 .backup`.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';

export const LOCK_FILE = 'textserver.lock';

/** Thrown when the directory cannot be used; its message is for the operator, one line. */
export class DataDirError extends Error {}

/** Creates the directory if missing (its parents too) and makes sure it is one. */
export function prepareDataDir(dir: string): void {
  // node's mkdirSync(recursive) spins for ever under /proc: create the missing levels one by one
  const missing: string[] = [];
  for (let d = resolve(dir); !existsSync(d); d = dirname(d)) {
    missing.unshift(d);
    if (dirname(d) === d) break;
  }
  for (const d of missing) {
    try {
      mkdirSync(d);
    } catch (err) {
      // another server creating it at the same moment is fine
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new DataDirError(`cannot create ${d}: ${reason(err)}`);
    }
  }
  if (!statSync(dir).isDirectory()) throw new DataDirError(`${dir} is not a directory`);
}

/** Takes the directory's lock, held until `release` (or the process's end). */
export function lockDataDir(dir: string): { release(): void } {
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(join(dir, LOCK_FILE));
    // exclusive locking mode keeps the lock the first write takes until the connection closes
    db.exec('PRAGMA locking_mode = EXCLUSIVE; PRAGMA busy_timeout = 0;');
  } catch (err) {
    throw new DataDirError(`cannot open ${join(dir, LOCK_FILE)}: ${reason(err)}`);
  }
  try {
    db.exec('BEGIN EXCLUSIVE; CREATE TABLE IF NOT EXISTS holder (pid INTEGER); DELETE FROM holder; COMMIT;');
    db.prepare('INSERT INTO holder (pid) VALUES (?)').run(process.pid);
  } catch (err) {
    db.close();
    if (/locked|busy/i.test((err as Error).message)) {
      throw new DataDirError(`${dir} is in use by another textserver process (a SQLite store is one process's; give each server its own --data)`);
    }
    throw new DataDirError(`cannot lock ${join(dir, LOCK_FILE)}: ${reason(err)}`);
  }
  return { release: () => db.close() };
}

const REASONS: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EROFS: 'read-only file system',
  ENOTDIR: 'a part of the path is not a directory',
  ENOENT: 'no such directory',
  ENOSPC: 'no space left on the device',
};

function reason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return REASONS[e.code ?? ''] ?? e.message ?? String(err);
}
