/**
 * Two live nodes with one --node-id share one presence table in Redis: the
 * second one's start writes its (empty) table over the first's, taking the
 * first node's users offline for everyone, and either one's SIGTERM takes
 * the other's users off too. A node refuses to start under a name whose
 * heartbeat (`ts:node:<id>`, refreshed every third of --presence-ttl) is
 * still being refreshed. A heartbeat left by a node of that name that was
 * killed only runs down: the restarted node waits one heartbeat period to
 * tell the two apart, and starts.
 */
import { ConfigError } from '../config.ts';
import type { RedisClient } from './redis-client.ts';

/** Over the gap between two refreshes (a third of the TTL, at least 100 ms): room for timer jitter. */
const MARGIN_MS = 50;

export async function refuseLiveNodeId(redis: RedisClient, nodeId: string, ttlMs: number): Promise<void> {
  const key = `ts:node:${nodeId}`;
  const before = await remaining(redis, key);
  if (before === undefined) return;
  const started = performance.now();
  await new Promise((r) => setTimeout(r, Math.max(100, Math.floor(ttlMs / 3)) + 250));
  const after = await remaining(redis, key);
  if (after === undefined) return;
  // unrefreshed, the key runs down with the clock; refreshed in between, it is at least a beat period above that
  if (after > before - (performance.now() - started) + MARGIN_MS) {
    throw new ConfigError(`--node-id: another live node of this cluster is named ${nodeId}; give each node its own --node-id`);
  }
}

/** The heartbeat's time to live in ms; undefined when there is none (or Redis cannot tell). */
async function remaining(redis: RedisClient, key: string): Promise<number | undefined> {
  try {
    const ms = await redis.pTTL(key);
    return ms > 0 ? ms : undefined;
  } catch {
    return undefined; // Redis away: the node starts as it would without it
  }
}
