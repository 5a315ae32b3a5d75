/**
 * `npm run bench -- cluster` (CLUSTER.md, "Tests and numbers"): the `send`
 * and `fanout` loads of scenarios.ts, unchanged, against one node on
 * PostgreSQL (the baseline: the same store without --bus) and against two
 * nodes on that PostgreSQL joined by Redis, every sender on node 1 and every
 * receiver on node 2, so each delivery crosses the bus; and how long a node
 * killed with SIGKILL takes to take its users offline on the other node.
 *
 * PostgreSQL (fsync on, as in production) and redis-server are throwaway
 * engines (tools/postgres.ts, tools/redis.ts), started by the first system
 * that needs them and stopped after the last one; each system gets a
 * database of its own.
 */
import { connect, type TextClient } from '../../src/client/client.ts';
import { createDatabase, postgresBin, startPostgres, type Postgres } from '../postgres.ts';
import { redisBin, startRedis, type Redis } from '../redis.ts';
import { fanoutFan, pairsFan, pairsPrepare, relayContender, SCENARIOS, tsWire, type Contender, type Params, type Scenario } from './scenarios.ts';
import { startTextserver, type System } from './systems.ts';
import type { SpecialResult } from './special.ts';

type Engines = { pg: Postgres; redis: Redis };
type Flags = { runs: number; presenceTtl: number };
type Progress = (text: string) => void;

const PW = 'password1';
/**
 * A send whose recipient has no connection on the sending node is stored as
 * not yet received, and counts against --mailbox-size, even while the
 * recipient is online on another node: at this rate a lagging receiver
 * would turn replies into `mailbox_full`, whose size the fixed-size load
 * loop cannot count. Both systems get the same setting.
 */
const NODE_ARGS = ['--mailbox-size', '100000000'];
/** CLUSTER.md: two nodes on the 2-core machine give at least half the one-node figure. */
const TARGET_RATIO = 0.5;

export function enginesAvailable(): boolean {
  return postgresBin() !== undefined && redisBin() !== undefined;
}

let shared: { engines: Promise<Engines>; users: number } | undefined;
let databases = 0;

async function startEngines(): Promise<Engines> {
  const pg = await startPostgres({ durable: true });
  try {
    return { pg, redis: await startRedis() };
  } catch (err) {
    await pg.stop();
    throw err;
  }
}

/** The engines and a fresh database on them; `release` when the system using them has stopped (not when this throws). */
async function acquire(): Promise<Engines & { store: string }> {
  shared ??= { engines: startEngines(), users: 0 };
  shared.users++;
  try {
    const engines = await shared.engines;
    return { ...engines, store: await createDatabase(engines.pg.url, `bench_cluster_${++databases}`) };
  } catch (err) {
    await release();
    throw err;
  }
}

async function release(): Promise<void> {
  if (shared === undefined || --shared.users > 0) return;
  const { engines } = shared;
  shared = undefined;
  const started = await engines.catch(() => undefined);
  if (started !== undefined) await Promise.all([started.pg.stop(), started.redis.stop()]);
}

/** Starts textservers on the engines; on failure stops what started and gives the engines back. */
async function withEngines(start: (engines: Engines & { store: string }, started: System[]) => Promise<System>): Promise<System> {
  const engines = await acquire();
  const started: System[] = [];
  try {
    return await start(engines, started);
  } catch (err) {
    for (const s of started) await s.stop();
    await release();
    throw err;
  }
}

/** Stops every node, then gives the engines back. */
function stopAll(nodes: System[]): () => Promise<void> {
  return async () => {
    for (const n of nodes) await n.stop();
    await release();
  };
}

function oneNode(params: Params): Promise<System> {
  return withEngines(async ({ store }, started) => {
    const node = await startTextserver({ fastHash: true, args: ['--store', store, ...NODE_ARGS] });
    started.push(node);
    await pairsPrepare(node.port, params);
    return { name: 'textserver 1 node', port: node.port, pid: node.pid, stop: stopAll(started) };
  });
}

function twoNodes(params: Params): Promise<System> {
  return withEngines(async ({ store, redis }, started) => {
    for (const id of ['n1', 'n2'])
      started.push(await startTextserver({ fastHash: true, args: ['--store', store, '--bus', redis.url, '--node-id', id, ...NODE_ARGS] }));
    const [n1, n2] = started as [System, System];
    await pairsPrepare(n1.port, params);
    return { name: 'textserver 2 nodes', port: n1.port, receiverPort: n2.port, pid: n1.pid, pids: [n1.pid, n2.pid], stop: stopAll(started) };
  });
}

function clusterScenario(of: Scenario, fan: (p: Params) => { groups: number; perGroup: number; publisherPipeline: number }): Scenario {
  return {
    name: `cluster-${of.name}`,
    unit: of.unit,
    describe: (p) => `cluster ${of.describe(p)}; PostgreSQL store; 2 nodes: senders on n1, receivers on n2`,
    // without the engines there is nothing to compare: no rows (the bench says so on stderr)
    contenders: (): Contender[] =>
      enginesAvailable()
        ? [relayContender('textserver 1 node', oneNode, tsWire, true, fan), relayContender('textserver 2 nodes', twoNodes, tsWire, false, fan)]
        : [],
    targetRatio: TARGET_RATIO,
  };
}

export const CLUSTER_SCENARIOS: Record<string, Scenario> = {
  'cluster-send': clusterScenario(SCENARIOS.send!, pairsFan),
  'cluster-fanout': clusterScenario(SCENARIOS.fanout!, fanoutFan),
};

/** Resolves at the push `expected` (fields joined by commas) on the client, with the time it came. */
function pushAt(client: TextClient, expected: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onPush = (fields: string[]) => {
      if (fields.join(',') !== expected) return;
      clearTimeout(timer);
      client.off('push', onPush);
      resolve(performance.now());
    };
    const timer = setTimeout(() => {
      client.off('push', onPush);
      reject(new Error(`no ${expected} within ${timeoutMs} ms`));
    }, timeoutMs);
    client.on('push', onPush);
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * A on node 1, A's friend B on node 2; node 1 is killed with SIGKILL and B
 * waits for `presence,A,offline` (CLUSTER.md rule 6: within --presence-ttl
 * + 2 s). Node 2 and B stay; each run starts a new node 1 and logs A in
 * there, waiting until B has heard A come online.
 */
async function clusterPresence(flags: Flags, progress: Progress): Promise<SpecialResult> {
  const ttl = flags.presenceTtl;
  const targetMs = (ttl + 2) * 1000;
  const result = (figures: SpecialResult['figures']): SpecialResult => ({
    scenario: 'cluster-presence',
    title: `cluster presence: A on node 1, A's friend B on node 2, node 1 killed with SIGKILL; ms until B gets presence,A,offline (--presence-ttl ${ttl} s; target TTL + 2 s = ${targetMs} ms)`,
    figures,
  });
  if (!enginesAvailable()) return result({ skipped: 'PostgreSQL or redis-server is not installed' });
  const nodes: System[] = [];
  const clients: TextClient[] = [];
  const times: number[] = [];
  let missed = 0;
  const { store, redis } = await acquire();
  const args = (id: string) => ['--store', store, '--bus', redis.url, '--node-id', id, '--presence-ttl', String(ttl)];
  try {
    progress('bench cluster-presence: befriending A and B');
    const n2 = await startTextserver({ fastHash: true, args: args('n2') });
    nodes.push(n2);
    const b = await connect({ port: n2.port });
    clients.push(b);
    await b.call('register', 'presence_a', PW);
    await b.call('register', 'presence_b', PW);
    await b.login('presence_b', PW);
    const a0 = await connect({ port: n2.port });
    await a0.login('presence_a', PW);
    await a0.call('friend_request', 'presence_b');
    await b.call('friend_accept', 'presence_a');
    const gone = pushAt(b, 'presence,presence_a,offline', 10_000);
    await a0.close();
    await gone;
    for (let run = 0; run < flags.runs; run++) {
      progress(`bench cluster-presence: run ${run + 1}/${flags.runs} (up to ${ttl + 2} s)`);
      const n1 = await startTextserver({ fastHash: true, args: args(`n1-${run}`) });
      nodes.push(n1);
      const a = await connect({ port: n1.port });
      clients.push(a);
      const online = pushAt(b, 'presence,presence_a,online', 10_000);
      await a.login('presence_a', PW);
      await online;
      const offline = pushAt(b, 'presence,presence_a,offline', targetMs + 10_000);
      const killed = performance.now();
      process.kill(n1.pid, 'SIGKILL');
      try {
        times.push((await offline) - killed);
      } catch {
        missed++;
      }
    }
  } finally {
    for (const c of clients) c.destroy();
    for (const n of nodes) await n.stop();
    await release();
  }
  const figures: SpecialResult['figures'] = { 'presence TTL s': ttl, runs: flags.runs };
  if (times.length > 0) {
    const ms = median(times);
    Object.assign(figures, {
      'ms from SIGKILL to presence,A,offline (median)': ms,
      'min ms': Math.min(...times),
      'max ms': Math.max(...times),
      'target ms': targetMs,
      'met (every run within the target)': Math.max(...times) <= targetMs && missed === 0 ? 'yes' : 'no',
    });
  }
  if (missed > 0) figures['runs where presence,A,offline never came (within target + 10 s)'] = missed;
  return result(figures);
}

export const CLUSTER_SPECIAL = { 'cluster-presence': clusterPresence };
