/**
 * `check:delivery --cluster` (CLUSTER.md, "Tests and numbers"): a throwaway
 * PostgreSQL (or the `--store postgres://...` given), a throwaway
 * redis-server, and three server nodes on them, each its own child process
 * on its own port. Any node serves every user, so a client may connect to
 * any of them, every time.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createDatabase, postgresBin, startPostgres, type Postgres } from '../postgres.ts';
import { redisBin, startRedis, type Redis } from '../redis.ts';
import { ServerProcess } from './server.ts';

export const NODES = 3;
/** Short, so a killed node's users go offline soon; presence is not what the checker checks. */
const PRESENCE_TTL_SECONDS = 3;

export type Cluster = {
  readonly nodes: readonly ServerProcess[];
  readonly redis: Redis;
  /** The store every node shares. */
  readonly store: string;
  stop(): Promise<void>;
};

/** Thrown when the engines are missing or do not start: the run cannot be made (exit code 2). */
export class ClusterSetupError extends Error {}

/**
 * Starts the engines and the nodes (together, so the migrations meet a
 * concurrent start as CLUSTER.md rule 3 says they may). `store`: a
 * `postgres://` URL to use, or undefined (or `postgres`) for a throwaway one.
 */
export async function startCluster(options: { store: string | undefined; data: string; inboxRetain: number; tag: string }): Promise<Cluster> {
  const ownPostgres = options.store === undefined || options.store === 'postgres';
  if (ownPostgres && postgresBin() === undefined)
    throw new ClusterSetupError('--cluster needs PostgreSQL: it is not installed (Debian package postgresql), or give --store postgres://...');
  if (redisBin() === undefined) throw new ClusterSetupError('--cluster needs Redis: redis-server is not installed (Debian package redis-server)');
  if (!ownPostgres && !/^postgres(ql)?:\/\//.test(options.store!))
    throw new ClusterSetupError(`--cluster needs a PostgreSQL store (--store postgres://...), not ${options.store}: a SQLite file is one process's`);

  let postgres: Postgres | undefined;
  let redis: Redis | undefined;
  const nodes: ServerProcess[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
    await postgres?.stop();
  };
  try {
    let store = options.store!;
    if (ownPostgres) {
      // fsync off: PostgreSQL itself is never killed here, and a node's SIGKILL loses nothing PostgreSQL acknowledged either way
      postgres = await startPostgres();
      store = await createDatabase(postgres.url, 'check_delivery');
    }
    // no persistence: a restart comes back empty, the hardest case for the bus and presence (CLUSTER.md rule 1)
    redis = await startRedis();
    for (let i = 1; i <= NODES; i++) {
      const data = join(options.data, `n${i}`);
      mkdirSync(data, { recursive: true });
      const extraArgs = ['--bus', redis.url, '--node-id', `chk${options.tag}-n${i}`, '--presence-ttl', String(PRESENCE_TTL_SECONDS)];
      nodes.push(new ServerProcess({ data, store, inboxRetain: options.inboxRetain, extraArgs, name: `node n${i}` }));
    }
    await Promise.all(nodes.map((n) => n.start()));
    return { nodes, redis, store, stop };
  } catch (err) {
    await stop();
    throw err instanceof ClusterSetupError ? err : new ClusterSetupError((err as Error).message);
  }
}
