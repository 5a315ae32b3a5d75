#!/usr/bin/env node
/**
 * The delivery checker (`npm run check:delivery -- [flags]`, DELIVERY.md §4).
 * Starts the server as a child process on 127.0.0.1, runs many inbox
 * clients that send to each other with `once` keys, drops their
 * connections and crashes them at random, SIGKILLs the server at random
 * moments and starts it again on the same data; at the end reads every
 * inbox from 0 and checks, per recipient, that every acknowledged send is
 * there exactly once and in order, that nothing was invented, that a send
 * whose reply was lost is there at most once, and that seqs are dense.
 * With --cluster the server is three nodes on one PostgreSQL and one Redis
 * (CLUSTER.md): clients reconnect to any node, nodes are killed one or two
 * at a time, and Redis is killed and started again, empty.
 * Prints `N passed, M failed` per property; exit code 1 on any failure,
 * 2 when the run could not be made. Bounded in time, loopback only.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, ReplyError } from '../src/client/client.ts';
import { Actor, PASSWORD, type Counters } from './check-delivery/actor.ts';
import { readInbox } from './check-delivery/final-read.ts';
import { seeded } from './check-delivery/random.ts';
import { ServerProcess } from './check-delivery/server.ts';
import { ClusterSetupError, NODES, startCluster, type Cluster } from './check-delivery/cluster.ts';
import { killAtRandom, killNodesAtRandom, restartRedisAtRandom, type FaultCounts } from './check-delivery/faults.ts';
import { createDatabase, startPostgres, type Postgres } from './postgres.ts';
import { formatResults, verify, type Attempt, type FinalStream, type History, type PropertyResult } from './check-delivery/verify.ts';
import { UsageError } from './cli-common.ts';

const USAGE = `usage: npm run check:delivery -- [--seconds N] [--clients N] [--seed N] [--kill-every SECONDS] [--drop-every SECONDS]
                 [--crash-share F] [--store postgres://...] [--inbox-retain N] [--without-once] [--keep]
                 [--cluster [--redis-every SECONDS]]`;

const HELP = `${USAGE}

  --seconds N          how long clients send (default 20); the whole run takes about 10 s more
  --clients N          inbox clients, one user each (default 20)
  --seed N             the seed of every random choice (default: a new one, printed); timing still varies
  --kill-every S       mean time between two SIGKILLs of the server (default 4; 0: never)
  --drop-every S       mean time between two interruptions of one client (default 3; 0: never)
  --crash-share F      share of interruptions that are app crashes rather than network drops (default 0.25)
  --store URL          the server's --store (default: SQLite in a temporary --data); \`--store postgres\`
                       starts a throwaway PostgreSQL (fsync on) for the run (tools/postgres.ts)
  --inbox-retain N     the server's --inbox-retain (default 1000000: nothing is dropped during the run)
  --without-once       send without once keys, again after a lost reply as a naive client would:
                       the checker should then find duplicates (it shows that it can fail)
  --keep               keep the data directory
  --cluster            three server nodes (--bus) on one PostgreSQL (throwaway, or --store postgres://...)
                       and a throwaway redis-server; clients connect and reconnect to any node at random,
                       --kill-every kills one node or two at once (never the last one up), Redis is killed and started
                       again empty; needs the Debian packages postgresql and redis-server
  --redis-every S      with --cluster: mean time between two Redis restarts (default 10; 0: never)`;

/** What the checker's sends carry: `send,<to>,chk,<from>:<n>`. */
const COMMAND = 'chk';
/** How long the sends in flight at the end may take to settle (the server may just be restarting). */
const SETTLE_MS = 30_000;
const READ_CONCURRENCY = 8;

type Flags = {
  seconds: number;
  clients: number;
  seed: number;
  killEverySec: number;
  dropEverySec: number;
  crashShare: number;
  store: string | undefined;
  inboxRetain: number;
  useOnce: boolean;
  keep: boolean;
  cluster: boolean;
  redisEverySec: number;
  help: boolean;
};

export function parseFlags(argv: readonly string[]): Flags {
  const flags: Flags = {
    seconds: 20,
    clients: 20,
    seed: Math.floor(Math.random() * 2 ** 31),
    killEverySec: 4,
    dropEverySec: 3,
    crashShare: 0.25,
    store: undefined,
    inboxRetain: 1_000_000,
    useOnce: true,
    keep: false,
    cluster: false,
    redisEverySec: 10,
    help: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${arg} needs a value`);
      return v;
    };
    const number = (min: number, max: number) => {
      const v = value();
      const n = Number(v);
      if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new UsageError(`${arg}: ${v} is not a number from ${min} to ${max}`);
      return n;
    };
    if (arg === '--seconds') flags.seconds = number(1, 86_400);
    else if (arg === '--clients') flags.clients = Math.round(number(2, 1000));
    else if (arg === '--seed') flags.seed = Math.round(number(0, 2 ** 32 - 1));
    else if (arg === '--kill-every') flags.killEverySec = number(0, 86_400);
    else if (arg === '--drop-every') flags.dropEverySec = number(0, 86_400);
    else if (arg === '--crash-share') flags.crashShare = number(0, 1);
    else if (arg === '--store') flags.store = value();
    else if (arg === '--inbox-retain') flags.inboxRetain = Math.round(number(1, 1e9));
    else if (arg === '--keep') flags.keep = true;
    else if (arg === '--without-once') flags.useOnce = false;
    else if (arg === '--cluster') flags.cluster = true;
    else if (arg === '--redis-every') flags.redisEverySec = number(0, 86_400);
    else if (arg === '--help' || arg === '-h') flags.help = true;
    else throw new UsageError(`unknown flag ${arg}`);
  }
  if (flags.cluster && flags.store !== undefined && flags.store !== 'postgres' && !/^postgres(ql)?:\/\//.test(flags.store))
    throw new UsageError('--cluster needs a PostgreSQL store (--store postgres://... or none): a SQLite file is one process\'s');
  return flags;
}

const say = (line: string) => process.stderr.write(`check:delivery: ${line}\n`);

/** Whether the server knows `resume` (DELIVERY.md). */
export function serverHasResume(port: number): Promise<boolean> {
  return serverHasCommand(port, 'resume');
}

/** Whether the server has a command: listed by `commands`, or at least not answered command_not_found. */
export async function serverHasCommand(port: number, command: string): Promise<boolean> {
  const client = await connect({ port, pushWords: { words: [] } });
  try {
    const listed: string[] = await client.request('commands').catch(() => []);
    if (listed[0] === 'commands') return listed.includes(command);
    await client.request(command);
    return true;
  } catch (err) {
    return !(err instanceof ReplyError && err.type === 'command_not_found');
  } finally {
    client.destroy();
  }
}

async function register(port: number, users: readonly string[]): Promise<void> {
  const client = await connect({ port, pushWords: { words: [] } });
  try {
    await Promise.all(users.map((u) => client.call('register', u, PASSWORD)));
  } finally {
    await client.close();
  }
}

/** Every user's inbox from 0, each on a node `port()` picks (any node must replay the same stream). */
async function readAll(port: () => number, users: readonly string[]): Promise<Map<string, FinalStream>> {
  const finals = new Map<string, FinalStream>();
  const queue = [...users];
  const worker = async () => {
    for (let user = queue.shift(); user !== undefined; user = queue.shift()) {
      try {
        finals.set(user, await readInbox(port(), user));
      } catch (err) {
        say(`the final read of ${user}'s inbox failed: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: READ_CONCURRENCY }, worker));
  return finals;
}

function outcomes(attempts: readonly Attempt[]): string {
  const ok = attempts.filter((a) => a.outcome === 'ok').length;
  const unknown = attempts.filter((a) => a.outcome === 'unknown').length;
  const errors = new Map<string, number>();
  for (const a of attempts) if (a.outcome === 'error') errors.set(a.error ?? '?', (errors.get(a.error ?? '?') ?? 0) + 1);
  const refused = [...errors].map(([type, n]) => `${n} ${type}`).join(', ');
  return `${attempts.length} sends: ${ok} acknowledged, ${unknown} unknown (reply never came), ${refused === '' ? 'none refused' : `refused: ${refused}`}`;
}

/** What the clients talk to: one server, or a cluster's nodes and its Redis. */
type Deployment = { nodes: readonly ServerProcess[]; cluster: Cluster | undefined; stop(): Promise<void> };

/** Starts the server (or the cluster); a string is why the run cannot be made. */
async function deploy(flags: Flags, data: string, tag: string): Promise<Deployment | string> {
  if (flags.cluster) {
    try {
      const cluster = await startCluster({ store: flags.store, data, inboxRetain: flags.inboxRetain, tag });
      return { nodes: cluster.nodes, cluster, stop: () => cluster.stop() };
    } catch (err) {
      if (!(err instanceof ClusterSetupError)) throw err;
      return `the cluster did not start: ${err.message}`;
    }
  }
  let postgres: Postgres | undefined;
  let store = flags.store;
  if (store === 'postgres') {
    try {
      postgres = await startPostgres({ durable: true });
      store = await createDatabase(postgres.url, 'check_delivery');
    } catch (err) {
      await postgres?.stop();
      return `no PostgreSQL for --store postgres: ${(err as Error).message}`;
    }
  }
  const server = new ServerProcess({ data, store, inboxRetain: flags.inboxRetain });
  const stop = async () => {
    await server.stop();
    await postgres?.stop();
  };
  try {
    await server.start();
  } catch (err) {
    await stop();
    return `the server did not start: ${(err as Error).message}`;
  }
  return { nodes: [server], cluster: undefined, stop };
}

export async function main(argv: readonly string[]): Promise<number> {
  let flags: Flags;
  try {
    flags = parseFlags(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`check:delivery: ${err.message}\n${USAGE}\n`);
    return 2;
  }
  if (flags.help) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const random = seeded(flags.seed);
  // a name of its own per run, so a --store that outlives runs never mixes two of them
  const tag = Date.now().toString(36).slice(-6);
  const data = mkdtempSync(join(tmpdir(), 'textserver-check-delivery-'));
  const deployment = await deploy(flags, data, tag);
  if (typeof deployment === 'string') {
    say(deployment);
    rmSync(data, { recursive: true, force: true });
    return 2;
  }
  const { nodes, cluster } = deployment;
  /** A node for each new connection, at random (the one server without --cluster). */
  const pickPort = (r: ReturnType<typeof seeded>) => () => nodes[nodes.length === 1 ? 0 : r.int(nodes.length)]!.port;
  const kills = () => nodes.reduce((n, s) => n + s.kills, 0);
  const faults: FaultCounts = { doubleKills: 0, redisRestarts: 0 };
  try {
    if (!(await serverHasResume(nodes[0]!.port))) {
      say('the server has no resume command: it does not implement the inbox (DELIVERY.md)');
      return 2;
    }
    const users = Array.from({ length: flags.clients }, (_, i) => `dc${tag}_${i}`);
    await register(nodes[0]!.port, users);
    const where =
      cluster === undefined
        ? `server on 127.0.0.1:${nodes[0]!.port} (${flags.store === undefined ? 'SQLite' : 'PostgreSQL'})`
        : `${NODES} nodes on 127.0.0.1:${nodes.map((n) => n.port).join(', ')} (PostgreSQL, Redis on ${cluster.redis.url})`;
    say(`seed ${flags.seed}, ${flags.clients} clients, ${flags.seconds} s, ${where}`);

    const attempts: Attempt[] = [];
    const counters: Counters = { drops: 0, crashes: 0, reconnects: 0, lostReplies: 0, abandoned: 0, refusedAfterReconnect: 0 };
    const actors = users.map(
      (me, i) =>
        new Actor({
          port: pickPort(random.fork(flags.clients + 2 + i)),
          me,
          users,
          command: COMMAND,
          random: random.fork(i),
          dropMeanMs: flags.dropEverySec * 1000,
          crashShare: flags.crashShare,
          attempts,
          counters,
          useOnce: flags.useOnce,
        }),
    );
    const started = Date.now();
    const until = started + flags.seconds * 1000;
    const settleBy = until + SETTLE_MS;
    const progress = setInterval(() => {
      const ok = attempts.filter((a) => a.outcome === 'ok').length;
      const redis = cluster === undefined ? '' : `${faults.redisRestarts} Redis restarts, `;
      say(
        `${ok} sends acknowledged, ${kills()} kills, ${redis}${counters.drops} drops, ${counters.crashes} crashes, ${Math.max(0, Math.round((until - Date.now()) / 1000))} s left`,
      );
    }, 5000);
    const runs = Promise.all(actors.map((a) => a.run(until, settleBy)));
    try {
      const killMs = flags.killEverySec * 1000;
      const killer = random.fork(flags.clients);
      await (cluster === undefined
        ? killAtRandom(nodes[0]!, killMs, until, killer)
        : Promise.all([
            killNodesAtRandom(nodes, killMs, until, killer, faults),
            restartRedisAtRandom(cluster.redis, flags.redisEverySec * 1000, until, random.fork(flags.clients + 1), faults),
          ]));
    } catch (err) {
      clearInterval(progress);
      for (const a of actors) a.stop();
      await runs;
      say(`${cluster === undefined ? 'the server' : 'a node or Redis'} did not start again after a kill: ${(err as Error).message}`);
      return 2;
    }
    let settleTimer: NodeJS.Timeout | undefined;
    await Promise.race([runs, new Promise<void>((r) => (settleTimer = setTimeout(r, settleBy - Date.now())))]);
    clearTimeout(settleTimer); // or it holds the process open for the rest of SETTLE_MS
    clearInterval(progress);
    for (const a of actors) a.stop();
    await runs;

    const finals = await readAll(pickPort(random.fork(2 * flags.clients + 2)), users);
    const history: History = {
      users,
      command: COMMAND,
      attempts,
      finals,
      live: new Map(actors.map((a, i) => [users[i]!, a.live])),
      resets: new Map(actors.map((a, i) => [users[i]!, a.resets])),
    };
    const results: PropertyResult[] = verify(history);
    const acked = attempts.filter((a) => a.outcome === 'ok').length;
    const entries = [...finals.values()].reduce((n, f) => n + f.entries.length, 0);
    const biggest = Math.max(0, ...[...finals.values()].map((f) => f.head));
    console.log(
      `check:delivery: seed ${flags.seed}, ${flags.clients} clients, ${flags.seconds} s of sending (${((Date.now() - started) / 1000).toFixed(0)} s in all)${flags.useOnce ? '' : ', WITHOUT once keys'}${cluster === undefined ? '' : `, ${NODES} nodes`}`,
    );
    console.log(`${outcomes(attempts)}`);
    const killed =
      cluster === undefined
        ? `${kills()} server kills (SIGKILL)`
        : `${kills()} node kills (SIGKILL; ${faults.doubleKills} times two nodes at once), ${faults.redisRestarts} Redis restarts (SIGKILL, back empty)`;
    console.log(
      `${killed}, ${counters.drops} connection drops, ${counters.crashes} client crashes, ${counters.reconnects} automatic reconnects; ` +
        `${counters.lostReplies} sends in flight at a disconnect (sent again${flags.useOnce ? ' under their once key' : ''}), ${counters.abandoned} given up at a crash`,
    );
    const restarts = nodes.flatMap((n) => n.startMs.slice(1));
    if (restarts.length > 0)
      console.log(
        `${cluster === undefined ? 'the server' : 'a node'} took ${Math.round(restarts.reduce((a, b) => a + b, 0) / restarts.length)} ms on average to listen again after a kill (most ${Math.max(...restarts)} ms)`,
      );
    console.log(`${entries} inbox entries read back from 0 (largest inbox ${biggest})`);
    if (counters.refusedAfterReconnect > 0) console.log(`${counters.refusedAfterReconnect} logins or resumes refused after a reconnect`);
    console.log(formatResults(results));
    let failed = results.some((r) => r.failed > 0);
    const crashes = nodes.flatMap((n) => n.crashes);
    if (crashes.length > 0) {
      console.log(`FAIL ${cluster === undefined ? 'the server' : 'a node'} exited by itself ${crashes.length} time(s); the first: ${crashes[0]}`);
      failed = true;
    }
    if (acked === 0) {
      console.log('FAIL no send was acknowledged: nothing was checked');
      failed = true;
    }
    if (biggest >= flags.inboxRetain) console.log(`note: an inbox reached --inbox-retain ${flags.inboxRetain}: old entries may have been dropped; raise it`);
    console.log(`check:delivery: ${failed ? 'FAILED' : 'passed'} (seed ${flags.seed})`);
    return failed ? 1 : 0;
  } finally {
    await deployment.stop();
    if (flags.keep) say(`data kept in ${data}`);
    else rmSync(data, { recursive: true, force: true });
  }
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
