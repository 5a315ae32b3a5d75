/**
 * What a node of a cluster has beside its hub, from the options: the bus
 * (local without --bus, Redis with it), cluster presence and shared login
 * counters (only with --bus; without, the hub keeps presence and Users its
 * counters in memory, as today). One place for the server to open and close.
 */
import type { Logger } from 'pino';
import type { Bus } from './bus.ts';
import { LocalBus } from './local-bus.ts';
import { PresenceRegistry } from './presence-registry.ts';
import { RedisBus } from './redis-bus.ts';
import { refuseLiveNodeId } from './node-id-check.ts';
import { SharedFailureCounter, type LoginThrottle } from './shared-throttle.ts';
import { SharedTrustedAddresses, type TrustedAddresses } from './shared-trust.ts';

/** How long a name's addresses are remembered after its last login (in memory they last as long as the process). */
const TRUST_TTL_MS = 30 * 24 * 3600 * 1000;

export type ClusterOptions = { bus: string | undefined; nodeId: string; presenceTtlMs: number };

export type Cluster = {
  readonly bus: Bus;
  /** Cluster presence; undefined without --bus. */
  readonly presence: PresenceRegistry | undefined;
  /** A login failure counter shared by the nodes (`scope`: `name` or `ip`); undefined without --bus. */
  loginThrottle(scope: string, limit: number, windowMs: number): LoginThrottle | undefined;
  /** The addresses names last logged in from, shared by the nodes (`keep` per name); undefined without --bus. */
  trustedAddresses(keep: number): TrustedAddresses | undefined;
  /** SIGTERM, first thing: this node's users offline for everyone at once (rule 4), while its requests in flight finish. */
  depart(): Promise<void>;
  /** SIGTERM, last thing: departs if not yet, then the connections closed. */
  close(): Promise<void>;
};

export async function openCluster(options: ClusterOptions, log: Logger): Promise<Cluster> {
  if (options.bus === undefined) {
    const bus = new LocalBus(options.nodeId);
    return { bus, presence: undefined, loginThrottle: () => undefined, trustedAddresses: () => undefined, depart: async () => {}, close: () => bus.close() };
  }
  const bus = await RedisBus.start({ url: options.bus, nodeId: options.nodeId, log });
  try {
    await refuseLiveNodeId(bus.redis, options.nodeId, options.presenceTtlMs);
  } catch (err) {
    await bus.close();
    throw err;
  }
  const presence = await PresenceRegistry.start({ bus, redis: bus.redis, nodeId: options.nodeId, ttlMs: options.presenceTtlMs, log });
  // the node's name is on every line already (cli.ts makes the logger a child with it): a second "node" key would make the line ambiguous JSON
  log.info({ up: bus.up }, 'cluster node');
  return {
    bus,
    presence,
    loginThrottle: (scope, limit, windowMs) => new SharedFailureCounter({ redis: bus.redis, scope, limit, windowMs, log }),
    trustedAddresses: (keep) => new SharedTrustedAddresses({ redis: bus.redis, keep, ttlMs: TRUST_TTL_MS, log }),
    depart: () => presence.stop(),
    close: async () => {
      await presence.stop();
      await bus.close();
    },
  };
}
