/**
 * The SQLite WAL under writes that never pause. SQLite starts its WAL over
 * only at a write that finds every frame checkpointed, which a checkpoint
 * running beside steady writes never achieves: the WAL grew by 100 MB/s
 * for as long as the load lasted. The store holds writes back for a short
 * checkpoint past a size; this test shrinks the sizes so the WAL goes
 * round many times in a few seconds, and checks that it stays bounded and
 * that nothing acknowledged is lost across those restarts.
 */
import { afterEach, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { sql } from 'kysely';
import { createLogger } from '../../src/log.ts';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';
import { WalIndex } from '../../src/store/sqlite/checkpoints.ts';
import { removeDir, ROOT, tempDir } from '../helpers/server.ts';

const LIMITS = { checkpointBytes: 256 * 1024, restartBytes: 1024 * 1024 };
const log = createLogger('silent');
let dir = tempDir();

afterEach(() => {
  removeDir(dir);
  dir = tempDir();
});

function walBytes(): number {
  return statSync(join(dir, 'textserver.db-wal'), { throwIfNoEntry: false })?.size ?? 0;
}

it('keeps the WAL bounded under writes that never pause, and keeps every acknowledged row', async () => {
  let store = new SqliteStore(dir, log, LIMITS);
  await store.migrate('waltest', ['CREATE TABLE notes (id INTEGER PRIMARY KEY, room INTEGER NOT NULL, body TEXT NOT NULL); CREATE INDEX notes_room ON notes (room, id)']);
  const body = 'x'.repeat(2000);
  let acknowledged = 0;
  let written = 0;
  // the WAL starting over shows as its frame count (in the wal-index) dropping; the largest file is
  // taken after it started over twice (before, the checkpointer thread may still be starting)
  const index = new WalIndex(join(dir, 'textserver.db-shm'));
  let restarts = 0;
  let largest = 0;
  let last = 0;
  const until = Date.now() + 4000;
  // 40 writers, one transaction in flight each, rows spread over 40 rooms: a new commit every turn
  const writer = async (room: number) => {
    while (Date.now() < until) {
      await store.transaction((tx) => sql`INSERT INTO notes (room, body) VALUES (${room}, ${body})`.execute(tx));
      acknowledged++;
    }
  };
  const sampler = setInterval(() => {
    const frames = index.read()?.frames ?? 0;
    if (frames < last) restarts++;
    if (restarts > 1) largest = Math.max(largest, walBytes());
    last = frames;
  }, 10);
  await Promise.all(Array.from({ length: 40 }, (_, i) => writer(i)));
  clearInterval(sampler);
  index.close();
  written = acknowledged * body.length;
  // enough went through for the WAL to have gone round many times
  expect(written).toBeGreaterThan(20 * LIMITS.restartBytes);
  expect(restarts).toBeGreaterThan(5);
  // the restart size, plus what arrives while a checkpoint copies the frames before its hold
  expect(largest).toBeLessThan(8 * LIMITS.restartBytes);

  await store.close();
  store = new SqliteStore(dir, log, LIMITS);
  const rows = await sql<{ n: number }>`SELECT count(*) AS n FROM notes`.execute(store.db);
  expect(rows.rows[0]!.n).toBe(acknowledged);
  await store.close();
}, 30_000);

it('loses no acknowledged row to a SIGKILL while the WAL starts over many times a second', async () => {
  for (let round = 0; round < 3; round++) {
    const writer = spawn(process.execPath, [join(ROOT, 'test/helpers/wal-writer.ts'), dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    const acknowledged: number[] = [];
    let rest = '';
    writer.stdout.on('data', (chunk: Buffer) => {
      const lines = (rest + chunk.toString()).split('\n');
      rest = lines.pop()!;
      for (const line of lines) acknowledged.push(Number(line));
    });
    // killed once 20 MB went through: the WAL (1 MiB here) has started over about twenty times
    const exited = new Promise((resolve) => writer.on('exit', resolve));
    while (acknowledged.length < 10_000 && writer.exitCode === null) await new Promise((resolve) => setTimeout(resolve, 20));
    writer.kill('SIGKILL');
    await exited;
    expect(acknowledged.length).toBeGreaterThanOrEqual(10_000);
    const store = new SqliteStore(dir, log, LIMITS);
    const rows = await sql<{ id: number }>`SELECT id FROM notes`.execute(store.db);
    await store.close();
    const stored = new Set(rows.rows.map((r) => Number(r.id)));
    expect(acknowledged.filter((id) => !stored.has(id))).toEqual([]);
  }
}, 60_000);
