/** `--store`: the composition root's choice of backend. */
import type { Logger } from 'pino';
import { ConfigError } from '../config.ts';
import { redactUrl } from '../redact-url.ts';
import { PostgresStore } from './postgres/postgres-store.ts';
import { SqliteStore } from './sqlite/sqlite-store.ts';
import { DataDirError } from './sqlite/data-lock.ts';
import { join } from 'node:path';
import type { Store } from './store.ts';

export async function openStore(spec: string, dataDir: string, log: Logger): Promise<Store> {
  if (spec === 'sqlite') {
    try {
      return new SqliteStore(dataDir, log);
    } catch (err) {
      // a directory that is a file, not writable, in use by another server, or a file that is not a database: the operator's to fix
      throw new ConfigError(err instanceof DataDirError ? `--data: ${err.message}` : `--data: cannot open ${join(dataDir, 'textserver.db')}: ${(err as Error).message}`);
    }
  }
  if (/^postgres(ql)?:\/\//.test(spec)) {
    try {
      return await PostgresStore.open(spec, log);
    } catch (err) {
      throw new ConfigError((err as Error).message);
    }
  }
  throw new ConfigError(`--store: ${JSON.stringify(redactUrl(spec))} is neither sqlite nor a postgres:// URL`);
}
