/**
 * The checker's faults at random moments: the server (or cluster nodes)
 * killed with SIGKILL and started again, and in a cluster Redis killed and
 * started again, empty. Each loop ends at `until` with everything up again.
 */
import type { Redis } from '../redis.ts';
import type { Random } from './random.ts';
import type { ServerProcess } from './server.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

/** How many node kills took two nodes down at once, and how often Redis was restarted. */
export type FaultCounts = { doubleKills: number; redisRestarts: number };

/** Down a while (clients back off, or go elsewhere) one time in three, straight back otherwise. */
async function downtime(random: Random): Promise<void> {
  await sleep(random.int(3) === 0 ? random.int(500) : 0);
}

/** SIGKILLs the server at random moments until `until`, starting it again each time; it is up when this resolves. */
export async function killAtRandom(server: ServerProcess, meanMs: number, until: number, random: Random): Promise<void> {
  if (meanMs <= 0) return;
  for (;;) {
    await sleep(Math.min(random.wait(meanMs), until - Date.now()));
    if (Date.now() >= until) return;
    await server.kill();
    await downtime(random);
    await server.start();
    // up for a moment at least, so the run makes progress between kills
    await sleep(200);
  }
}

/**
 * SIGKILLs one node, or two at once (one time in three), at random moments
 * until `until`, each started again in the background: a node restarts in
 * seconds, and the next kill does not wait for it, so downtimes overlap.
 * Never the last node up, so the clients always have somewhere to go. Every
 * node is up when this resolves; it rejects if one could not start again.
 */
export async function killNodesAtRandom(nodes: readonly ServerProcess[], meanMs: number, until: number, random: Random, counts: FaultCounts): Promise<void> {
  if (meanMs <= 0) return;
  const up = new Set(nodes);
  const restarts: Promise<void>[] = [];
  let failure: Error | undefined;
  for (;;) {
    await sleep(Math.min(random.wait(meanMs), until - Date.now()));
    if (Date.now() >= until || failure !== undefined) break;
    const victims = pick([...up], Math.min(random.int(3) === 0 ? 2 : 1, up.size - 1), random);
    if (victims.length === 0) continue; // only one node up: it stays
    if (victims.length === 2) counts.doubleKills++;
    for (const n of victims) up.delete(n);
    const back = async () => {
      await Promise.all(victims.map((n) => n.kill()));
      await downtime(random);
      await Promise.all(victims.map((n) => n.start()));
      for (const n of victims) up.add(n);
    };
    restarts.push(back().catch((err: Error) => void (failure ??= err)));
  }
  await Promise.all(restarts);
  if (failure !== undefined) throw failure;
}

/** Kills Redis (SIGKILL: it comes back empty) at random moments until `until`, and starts it again after up to a second. */
export async function restartRedisAtRandom(redis: Redis, meanMs: number, until: number, random: Random, counts: FaultCounts): Promise<void> {
  if (meanMs <= 0) return;
  for (;;) {
    await sleep(Math.min(random.wait(meanMs), until - Date.now()));
    if (Date.now() >= until) return;
    counts.redisRestarts++;
    await redis.kill();
    await sleep(random.int(1000));
    await redis.start();
  }
}

/** n of the items, drawn at random (no draw when all are taken: one server's run draws as it always did). */
function pick<T>(items: readonly T[], n: number, random: Random): T[] {
  if (n >= items.length) return [...items];
  const left = [...items];
  const chosen: T[] = [];
  while (chosen.length < n && left.length > 0) chosen.push(left.splice(random.int(left.length), 1)[0]!);
  return chosen;
}
