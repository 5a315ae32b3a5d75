/**
 * The bus: how a push made on one node reaches the connections held by the
 * others (CLUSTER.md). The hub delivers to its own sessions directly and
 * publishes for the rest; a node never receives what it published itself.
 * The bus is a doorbell, the store is the truth: a message may be lost
 * (Redis restarts, a publish while it is down), so anything that must not be
 * lost is committed first and carries what a receiver needs to notice a gap
 * (an inbox `seq`) or to recover (a room message id, `history`).
 *
 * Two implementations: LocalBus (one process, no network: today's behaviour)
 * and RedisBus (`--bus redis://...`, sharded pub/sub).
 */

/** What the hub publishes: a kind it chooses, its fields (JSON values), and an inbox seq when the push has one. */
export type BusMessage = {
  readonly kind: string;
  readonly fields?: Readonly<Record<string, unknown>>;
  readonly seq?: number;
};

/** A message as received: what was published, and the node that published it. */
export type Delivered = BusMessage & { readonly origin: string };

export type MessageHandler = (channel: string, message: Delivered) => void;

export type BusStats = {
  /** Messages handed to the bus for publishing. */
  published: number;
  /** Messages dropped instead of published: the bus was down (counted, never queued). */
  dropped: number;
  /** Messages received from other nodes and handed to the handlers. */
  received: number;
  /** Messages received that could not be decoded, or whose handler threw. */
  malformed: number;
  /** Times every subscription was made again after the connection came back. */
  resubscribed: number;
};

export interface Bus {
  /** This node's name (--node-id): the `origin` of what it publishes. */
  readonly nodeId: string;
  /**
   * Subscribes to a channel; subscriptions are counted, so n subscribe()s
   * need n unsubscribe()s. Resolves once the subscription is active on the
   * engine (rule 5: anything published after that reaches this node), or at
   * once while the bus is down: the channel is then subscribed when it comes
   * back, and onResubscribed says so. Never rejects.
   */
  subscribe(channel: string): Promise<void>;
  /** Gives back one subscribe(); the last one ends the subscription. Never rejects. */
  unsubscribe(channel: string): Promise<void>;
  /** Publishes to the nodes subscribed to `channel`. Never throws; while the bus is down the message is dropped and counted. */
  publish(channel: string, message: BusMessage): void;
  /** Adds a handler for the messages of other nodes on the channels subscribed; returns its removal. */
  onMessage(handler: MessageHandler): () => void;
  /**
   * Adds a handler called after the connection to the engine came back and
   * every channel is subscribed again: messages may have been lost meanwhile,
   * so the hub re-reads the inboxes of its users from the store (rule 1).
   */
  onResubscribed(handler: () => void): () => void;
  /** True while the bus can carry messages (for /readyz). The local bus is always up. */
  readonly up: boolean;
  readonly stats: Readonly<BusStats>;
  /** Channels subscribed at least once. */
  readonly channels: number;
  /** Stops: no more messages in or out. */
  close(): Promise<void>;
  /**
   * Takes the cluster-wide lease `name` (drainLease(userId): one mailbox
   * drain per user in the cluster) for this node, renewed while held:
   * undefined when another node holds it. LocalBus grants at once and
   * synchronously (no other node). RedisBus grants too when Redis cannot be
   * asked: doing the work twice beats leaving it undone. Never rejects.
   */
  lease(name: string): Lease | undefined | Promise<Lease | undefined>;
}

/** A lease held by this node (Bus.lease). */
export interface Lease {
  /** Gives it back and stops renewing it; once. Never throws. */
  release(): void;
  /** `fn` runs once if the lease is lost to another node (it lapsed while this node could not renew it). */
  onLost(fn: () => void): void;
}

/** The lease a node holds while it drains a user's stored messages (src/core/mailbox-drain.ts). */
export function drainLease(userId: number): string {
  return `ts:drain:{${userId}}`;
}

/** The lease of a bus with no other node: always granted, nothing to renew or give back. */
export const LONE_LEASE: Lease = { release: () => {}, onLost: () => {} };

/** The channel of a user's connections: a node subscribes while it holds at least one of them. */
export function userChannel(userId: number): string {
  return `ts:u:${userId}`;
}

/** The channel of a room (by the key the store names it by, so two spellings are one channel): a node subscribes while it holds a connection of one of its members. */
export function roomChannel(roomName: string): string {
  return `ts:r:${roomName}`;
}

/** What a channel is for, from its name (the hub's message handler needs the user or the room back). */
export function parseChannel(channel: string): { user: number } | { room: string } | undefined {
  if (channel.startsWith('ts:u:')) {
    const id = Number(channel.slice(5));
    return Number.isSafeInteger(id) && channel.length > 5 ? { user: id } : undefined;
  }
  if (channel.startsWith('ts:r:') && channel.length > 5) return { room: channel.slice(5) };
  return undefined;
}

/**
 * Presence changes (presence-registry.ts), one channel for the cluster: every
 * node needs every change to tell its local friends and room co-members.
 */
export const PRESENCE_CHANNEL = 'ts:presence';

/**
 * Every node of the cluster listens here. A node whose publishes were
 * dropped (its command connection was down while its peers' subscriptions
 * were not) says `lost` here once it is back, and every other node runs its
 * onResubscribed handlers: the pushes it may have missed are in the store.
 */
export const CLUSTER_CHANNEL = 'ts:cluster';

/**
 * The payload on the wire, compact JSON: {"o":origin,"k":kind,"f":{fields},"s":seq}
 * ("f" and "s" left out when absent). JSON keeps it readable with
 * `redis-cli SSUBSCRIBE` and needs no schema shared between versions.
 */
export function encodeMessage(origin: string, message: BusMessage): string {
  const wire: { o: string; k: string; f?: Readonly<Record<string, unknown>>; s?: number } = { o: origin, k: message.kind };
  if (message.fields !== undefined) wire.f = message.fields;
  if (message.seq !== undefined) wire.s = message.seq;
  return JSON.stringify(wire);
}

/** The message a payload carries, or undefined when it is not one (another program on the same Redis, a bug). */
export function decodeMessage(payload: string): Delivered | undefined {
  let wire: unknown;
  try {
    wire = JSON.parse(payload);
  } catch {
    return undefined;
  }
  if (typeof wire !== 'object' || wire === null) return undefined;
  const { o, k, f, s } = wire as Record<string, unknown>;
  if (typeof o !== 'string' || typeof k !== 'string') return undefined;
  if (f !== undefined && (typeof f !== 'object' || f === null || Array.isArray(f))) return undefined;
  if (s !== undefined && !Number.isSafeInteger(s)) return undefined;
  const message: { origin: string; kind: string; fields?: Record<string, unknown>; seq?: number } = { origin: o, kind: k };
  if (f !== undefined) message.fields = f as Record<string, unknown>;
  if (s !== undefined) message.seq = s as number;
  return message;
}

export function emptyStats(): BusStats {
  return { published: 0, dropped: 0, received: 0, malformed: 0, resubscribed: 0 };
}

/** Handlers added and removed, each called in turn; one that throws is reported and does not stop the others. */
export class HandlerSet<A extends unknown[]> {
  readonly #handlers = new Set<(...args: A) => void>();
  readonly #onError: (err: unknown) => void;

  constructor(onError: (err: unknown) => void) {
    this.#onError = onError;
  }

  add(handler: (...args: A) => void): () => void {
    // a wrapper, so adding the same function twice gives two handlers
    const entry = (...args: A) => handler(...args);
    this.#handlers.add(entry);
    return () => void this.#handlers.delete(entry);
  }

  /** Calls every handler; returns how many threw. */
  call(...args: A): number {
    let threw = 0;
    for (const h of this.#handlers) {
      try {
        h(...args);
      } catch (err) {
        threw++;
        this.#onError(err);
      }
    }
    return threw;
  }
}
