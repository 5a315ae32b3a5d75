/**
 * The hub's side of a cluster (CLUSTER.md), only with --bus: which channels
 * this node holds for its users, what it publishes for the other nodes, and
 * what it does with theirs. The hub itself keeps serving its own
 * connections directly; this adds the hop to the others.
 *
 * A user with a connection here holds their user channel and the channels
 * modules follow for them (their rooms). The hold is taken before a login's
 * reply (rule 5: anything pushed after the reply reaches the new
 * connection) and given back when the user's last connection here goes.
 */
import type { Logger } from 'pino';
import { userChannel, type Bus, type Delivered } from '../bus/bus.ts';
import type { PresenceRegistry } from '../bus/presence-registry.ts';
import type { ClusterApi, ClusterHandler } from './module-api.ts';

/** `ready`: the first subscription of the user's channels (a second login waits for it too). */
type Hold = { refs: number; channels: Set<string>; ready: Promise<void> };

export class ClusterLink implements ClusterApi {
  readonly bus: Bus;
  readonly presence: PresenceRegistry | undefined;
  readonly #log: Logger;
  readonly #afterCommit: (fn: () => void) => void;
  readonly #holds = new Map<number, Hold>();
  readonly #providers = new Set<(userId: number) => Iterable<string>>();
  readonly #handlers = new Map<string, Set<ClusterHandler>>();

  constructor(bus: Bus, presence: PresenceRegistry | undefined, afterCommit: (fn: () => void) => void, log: Logger) {
    this.bus = bus;
    this.presence = presence;
    this.#afterCommit = afterCommit;
    this.#log = log.child({ component: 'cluster' });
    bus.onMessage((channel, message) => this.#dispatch(channel, message));
  }

  get nodeId(): string {
    return this.bus.nodeId;
  }

  // ---- holds: the channels of the users with connections here ----------

  /** Takes a hold on the user's channels (the first one subscribes them); resolves once they are active. */
  hold(userId: number): Promise<void> {
    const h = this.#holds.get(userId);
    if (h !== undefined) {
      h.refs++;
      return h.ready;
    }
    const channels = new Set<string>([userChannel(userId)]);
    for (const provider of this.#providers) {
      try {
        for (const c of provider(userId)) channels.add(c);
      } catch (err) {
        this.#log.error({ err }, 'channel provider failed');
      }
    }
    const ready = Promise.all([...channels].map((c) => this.bus.subscribe(c))).then(() => undefined);
    this.#holds.set(userId, { refs: 1, channels, ready });
    return ready;
  }

  /** Gives a hold back; the last one unsubscribes the user's channels. */
  release(userId: number): void {
    const h = this.#holds.get(userId);
    if (h === undefined) return;
    if (--h.refs > 0) return;
    this.#holds.delete(userId);
    for (const c of h.channels) void this.bus.unsubscribe(c);
  }

  /** Users with a hold here (connections, or a login on its way). */
  heldUsers(): IterableIterator<number> {
    return this.#holds.keys();
  }

  follows(provider: (userId: number) => Iterable<string>): () => void {
    this.#providers.add(provider);
    return () => void this.#providers.delete(provider);
  }

  follow(userId: number, channel: string): Promise<void> {
    const h = this.#holds.get(userId);
    if (h === undefined || h.channels.has(channel)) return Promise.resolve();
    h.channels.add(channel);
    return this.bus.subscribe(channel);
  }

  unfollow(userId: number, channel: string): void {
    const h = this.#holds.get(userId);
    if (h === undefined || !h.channels.delete(channel)) return;
    void this.bus.unsubscribe(channel);
  }

  // ---- messages ---------------------------------------------------------

  subscribe(channel: string): Promise<void> {
    return this.bus.subscribe(channel);
  }

  unsubscribe(channel: string): void {
    void this.bus.unsubscribe(channel);
  }

  /** After the commit of the transaction the caller runs in, if any (a push never announces what may roll back). */
  publish(channel: string, kind: string, fields: Record<string, unknown>, seq?: number): void {
    const message = seq === undefined ? { kind, fields } : { kind, fields, seq };
    this.#afterCommit(() => this.bus.publish(channel, message));
  }

  on(kind: string, handler: ClusterHandler): () => void {
    let set = this.#handlers.get(kind);
    if (set === undefined) this.#handlers.set(kind, (set = new Set()));
    const entry: ClusterHandler = (...args) => handler(...args);
    set.add(entry);
    return () => void set.delete(entry);
  }

  onResubscribed(handler: () => void): () => void {
    return this.bus.onResubscribed(handler);
  }

  async isOnline(userId: number): Promise<boolean> {
    return this.presence === undefined ? this.#holds.has(userId) : this.presence.isOnline(userId);
  }

  #dispatch(channel: string, message: Delivered): void {
    const set = this.#handlers.get(message.kind);
    if (set === undefined) return;
    for (const h of set) h(channel, message.fields ?? {}, message);
  }
}
