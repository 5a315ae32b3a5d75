/**
 * A worker thread that checkpoints the WAL into the database file, on its
 * own connection with `synchronous = FULL`: the copy and its fsyncs happen
 * off the event loop, and the database file is synced before the WAL may
 * be reused. The main connection never checkpoints (wal_autocheckpoint=0).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DatabaseSync } from 'node:sqlite';

const { file } = workerData as { file: string };
const db = new DatabaseSync(file);
db.exec('PRAGMA busy_timeout = 5000; PRAGMA synchronous = FULL;');

parentPort!.on('message', (message: 'checkpoint' | 'close') => {
  if (message === 'close') {
    db.close();
    parentPort!.close();
    return;
  }
  try {
    const row = db.prepare('PRAGMA wal_checkpoint(PASSIVE)').get() as { busy: number; log: number; checkpointed: number };
    parentPort!.postMessage({ ok: true, log: row.log, checkpointed: row.checkpointed });
  } catch (err) {
    parentPort!.postMessage({ ok: false, error: (err as Error).message });
  }
});
