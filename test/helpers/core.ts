/** A ServerCore without listeners, for unit tests of what lives in src/core. */
import { createLogger } from '../../src/log.ts';
import { resolveOptions } from '../../src/config.ts';
import { ServerCore } from '../../src/core/server-core.ts';
import { openSession } from '../../src/core/sessions.ts';
import type { Session } from '../../src/core/session.ts';
import { CORE_MIGRATIONS } from '../../src/store/core-data.ts';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';
import { FakeLink } from './fake-link.ts';
import { FAST_HASH, removeDir, tempDir } from './server.ts';

export type TestCore = {
  core: ServerCore;
  store: SqliteStore;
  open(link?: FakeLink): { session: Session; link: FakeLink };
  close(): Promise<void>;
};

/** The smallest real ServerCore: a SQLite store in a temp dir with the core tables, no modules, no listeners. */
export async function testCore(args: string[] = []): Promise<TestCore> {
  const dir = tempDir();
  const log = createLogger('silent');
  const store = new SqliteStore(dir, log);
  await store.migrate('core', CORE_MIGRATIONS);
  const core = new ServerCore(resolveOptions(['--data', dir, ...FAST_HASH, ...args], {}), store, log, 'test');
  return {
    core,
    store,
    open(link = new FakeLink()) {
      const session = openSession(core, link);
      if (session === undefined) throw new Error('the registry is draining');
      return { session, link };
    },
    async close() {
      await store.close();
      removeDir(dir);
    },
  };
}
