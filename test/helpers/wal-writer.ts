/**
 * A child process for test/store/sqlite-wal.test.ts: 40 writers insert rows
 * into a SQLite store whose WAL limits are scaled down (so it starts over
 * many times a second) and print each acknowledged id, until killed.
 */
import { sql } from 'kysely';
import { createLogger } from '../../src/log.ts';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';

const dir = process.argv[2]!;
const store = new SqliteStore(dir, createLogger('silent'), { checkpointBytes: 256 * 1024, restartBytes: 1024 * 1024 });
await store.migrate('waltest', ['CREATE TABLE notes (id INTEGER PRIMARY KEY, room INTEGER NOT NULL, body TEXT NOT NULL); CREATE INDEX notes_room ON notes (room, id)']);
const body = 'x'.repeat(2000);
await Promise.all(
  Array.from({ length: 40 }, async (_, room) => {
    for (;;) {
      const r = await store.transaction((tx) => sql<{ id: number }>`INSERT INTO notes (room, body) VALUES (${room}, ${body}) RETURNING id`.execute(tx));
      process.stdout.write(`${r.rows[0]!.id}\n`);
    }
  }),
);
