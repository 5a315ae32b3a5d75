/** `--store`: the composition root's choice of backend. */
import type { Logger } from 'pino';
import { ConfigError } from '../config.ts';
import { PostgresStore } from './postgres/postgres-store.ts';
import { SqliteStore } from './sqlite/sqlite-store.ts';
import type { Store } from './store.ts';

export async function openStore(spec: string, dataDir: string, log: Logger): Promise<Store> {
  if (spec === 'sqlite') return new SqliteStore(dataDir, log);
  if (/^postgres(ql)?:\/\//.test(spec)) {
    try {
      return await PostgresStore.open(spec, log);
    } catch (err) {
      throw new ConfigError((err as Error).message);
    }
  }
  throw new ConfigError(`--store: ${JSON.stringify(spec)} is neither sqlite nor a postgres:// URL`);
}
