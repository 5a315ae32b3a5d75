/**
 * The bus of a cluster (`--bus redis://host:port`): Redis sharded pub/sub.
 * One connection publishes (SPUBLISH) and runs the presence and throttling
 * scripts; a second, dedicated one subscribes (SSUBSCRIBE), so pushes
 * arriving never wait behind a script's reply, nor commands behind a
 * burst of pushes. Sharded channels cost nothing
 * on a single Redis and spread over the shards of a Redis Cluster, each
 * channel on the shard of its own slot (no hash tags: a user's or a room's
 * channel stands alone, so spreading them is the point).
 *
 * Subscriptions are counted per channel; the first subscribe() sends
 * SSUBSCRIBE, the last unsubscribe() SUNSUBSCRIBE, one operation at a time
 * per channel so a quick leave-and-join cannot end unsubscribed. Redis down
 * never throws: publish() drops and counts, subscribe() resolves at once and
 * the subscription is made when Redis is back, after which the
 * onResubscribed handlers run (the hub re-reads its users' inboxes). A
 * node whose publishes were dropped says so on CLUSTER_CHANNEL when its
 * connection is back, and the others run those handlers too.
 */
import type { Logger } from 'pino';
import {
  CLUSTER_CHANNEL,
  decodeMessage,
  emptyStats,
  encodeMessage,
  HandlerSet,
  type Bus,
  type BusMessage,
  type BusStats,
  type Delivered,
  type Lease,
  type MessageHandler,
} from './bus.ts';
import { RedisLeases } from './redis-leases.ts';
import { closeClient, connectInBackground, newRedisClient, type RedisClient } from './redis-client.ts';

export type RedisBusOptions = {
  url: string;
  nodeId: string;
  log: Logger;
  /** How long start() waits for Redis before going on without it (it keeps trying). Default 2 s. */
  connectWaitMs?: number;
  /** Longest a subscribe() waits for Redis to confirm before resolving anyway (it stays pending). Default 2 s. */
  subscribeWaitMs?: number;
  /** How long a lease (lease()) outlives a node that stopped renewing it. Default 5 s. */
  leaseTtlMs?: number;
};

/** A channel's count of subscribers, what Redis has (as far as known), and the operation in flight. */
type Channel = { refs: number; active: boolean; op: Promise<void> | undefined };

export class RedisBus implements Bus {
  readonly nodeId: string;
  readonly stats: BusStats = emptyStats();
  readonly #log: Logger;
  readonly #commands: RedisClient;
  readonly #subscriber: RedisClient;
  readonly #channels = new Map<string, Channel>();
  readonly #messages: HandlerSet<[string, Delivered]>;
  readonly #resubscribed: HandlerSet<[]>;
  readonly #subscribeWaitMs: number;
  readonly #connectWaitMs: number;
  readonly #leases: RedisLeases;
  /** The one listener node-redis calls for every channel (a Set of it per channel, so it is added once). */
  readonly #listener = (payload: string, channel: string) => this.#receive(channel, payload);
  #subscriberReadyOnce = false;
  /** A publish was dropped since the command connection was last up: the others are told when it is back. */
  #droppedSinceUp = false;
  #closed = false;

  private constructor(options: RedisBusOptions) {
    this.nodeId = options.nodeId;
    this.#log = options.log.child({ component: 'bus' });
    this.#subscribeWaitMs = options.subscribeWaitMs ?? 2000;
    this.#connectWaitMs = options.connectWaitMs ?? 2000;
    this.#messages = new HandlerSet((err) => {
      this.stats.malformed++;
      this.#log.error({ err }, 'bus message handler failed');
    });
    this.#resubscribed = new HandlerSet((err) => this.#log.error({ err }, 'bus resubscribe handler failed'));
    this.#commands = newRedisClient(options.url, { role: 'commands', failWhileDown: true }, this.#log);
    this.#subscriber = newRedisClient(options.url, { role: 'subscriber', failWhileDown: false }, this.#log);
    this.#leases = new RedisLeases(this.#commands, this.nodeId, this.#log, options.leaseTtlMs ?? 5000);
    this.#subscriber.on('ready', () => this.#onSubscriberReady());
    this.#commands.on('ready', () => this.#onCommandsReady());
  }

  /** Connects both connections (waiting at most connectWaitMs; it keeps trying after). */
  static async start(options: RedisBusOptions): Promise<RedisBus> {
    const bus = new RedisBus(options);
    void bus.subscribe(CLUSTER_CHANNEL);
    await Promise.all([connectInBackground(bus.#commands, bus.#connectWaitMs), connectInBackground(bus.#subscriber, bus.#connectWaitMs)]);
    if (!bus.up) bus.#log.warn('starting without Redis: pushes stay on this node until it is reachable');
    return bus;
  }

  /** The command connection, shared with the presence registry and the login throttle (node-redis pipelines what they send together). */
  get redis(): RedisClient {
    return this.#commands;
  }

  get up(): boolean {
    return !this.#closed && this.#commands.isReady && this.#subscriber.isReady;
  }

  get channels(): number {
    let n = 0;
    for (const c of this.#channels.values()) if (c.refs > 0) n++;
    return n;
  }

  async subscribe(channel: string): Promise<void> {
    if (this.#closed) return;
    let c = this.#channels.get(channel);
    if (c === undefined) this.#channels.set(channel, (c = { refs: 0, active: false, op: undefined }));
    c.refs++;
    this.#reconcile(channel, c);
    // until Redis has it: an unsubscribe in flight settles first, then the subscribe it was followed by;
    // bounded, so a connection that drops now does not hold the request that asked
    const deadline = performance.now() + this.#subscribeWaitMs;
    while (c.op !== undefined && c.refs > 0 && this.#subscriber.isReady && !this.#closed) {
      const left = deadline - performance.now();
      if (left <= 0) return;
      await withTimeout(c.op, left);
    }
  }

  async unsubscribe(channel: string): Promise<void> {
    const c = this.#channels.get(channel);
    if (c === undefined || c.refs === 0) return;
    c.refs--;
    this.#reconcile(channel, c);
  }

  publish(channel: string, message: BusMessage): void {
    if (this.#closed || !this.#commands.isReady) {
      this.#drop();
      return;
    }
    this.stats.published++;
    // lost with the connection: the doorbell did not ring, the store still has it
    this.#commands.sPublish(channel, encodeMessage(this.nodeId, message)).catch(() => this.#drop());
  }

  #drop(): void {
    this.stats.dropped++;
    this.#droppedSinceUp = true;
  }

  #onCommandsReady(): void {
    if (!this.#droppedSinceUp || this.#closed) return;
    this.#droppedSinceUp = false;
    this.#log.info({ dropped: this.stats.dropped }, 'publishes were dropped while Redis was unreachable; the other nodes re-read');
    this.#commands.sPublish(CLUSTER_CHANNEL, encodeMessage(this.nodeId, { kind: 'lost' })).catch(() => this.#drop());
  }

  onMessage(handler: MessageHandler): () => void {
    return this.#messages.add(handler);
  }

  onResubscribed(handler: () => void): () => void {
    return this.#resubscribed.add(handler);
  }

  lease(name: string): Promise<Lease | undefined> {
    return this.#leases.take(name);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#channels.clear();
    await Promise.all([closeClient(this.#subscriber), closeClient(this.#commands)]);
  }

  /**
   * Brings Redis to what the count says, one operation per channel at a
   * time: each operation, when it settles, looks again (a join during a
   * leave subscribes again after it).
   */
  #reconcile(channel: string, c: Channel): void {
    if (c.op !== undefined || this.#closed) return;
    const want = c.refs > 0;
    if (want === c.active) {
      if (!want) this.#channels.delete(channel);
      return;
    }
    const op = want ? this.#subscriber.sSubscribe(channel, this.#listener) : this.#subscriber.sUnsubscribe(channel, this.#listener);
    c.op = op.then(
      () => {
        c.active = want;
      },
      (err: unknown) => {
        // the connection dropped (it is made again on 'ready') or the client closed
        if (!this.#closed) this.#log.debug({ channel, err: String(err) }, want ? 'subscribe failed' : 'unsubscribe failed');
      },
    );
    void c.op.then(() => {
      c.op = undefined;
      // only when it settled while connected: otherwise 'ready' reconciles everything
      if (this.#subscriber.isReady) this.#reconcile(channel, c);
    });
  }

  /**
   * The subscriber connected. node-redis itself subscribed again to the
   * channels whose SSUBSCRIBE had been confirmed before the drop; those
   * asked for while it was down, or left while it was down, are made right
   * here; then the handlers hear that messages may have been missed.
   */
  #onSubscriberReady(): void {
    const reconnect = this.#subscriberReadyOnce;
    this.#subscriberReadyOnce = true;
    if (this.#closed) return;
    const pending: Promise<void>[] = [];
    for (const [channel, c] of this.#channels) {
      // node-redis re-subscribed every channel it knew, so those Redis has now are exactly the confirmed ones
      if (c.op === undefined) this.#reconcile(channel, c);
      if (c.op !== undefined) pending.push(c.op);
    }
    // the first connection, before anyone subscribed: nothing can have been missed
    if (!reconnect && ![...this.#channels.keys()].some((k) => k !== CLUSTER_CHANNEL)) return;
    void Promise.all(pending).then(() => {
      if (this.#closed || !this.#subscriber.isReady) return;
      this.stats.resubscribed++;
      this.#log.info({ channels: this.channels }, 'bus subscriptions made again');
      this.#resubscribed.call();
    });
  }

  #receive(channel: string, payload: string): void {
    const message = decodeMessage(payload);
    if (message === undefined) {
      this.stats.malformed++;
      return;
    }
    // our own publish comes back when we are subscribed too: the hub delivered it locally already
    if (message.origin === this.nodeId) return;
    // a channel left a moment ago (its SUNSUBSCRIBE in flight) still delivers: nobody here wants it
    if ((this.#channels.get(channel)?.refs ?? 0) === 0) return;
    this.stats.received++;
    if (channel === CLUSTER_CHANNEL && message.kind === 'lost') {
      this.#resubscribed.call();
      return;
    }
    this.#messages.call(channel, message);
  }
}

function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<void>((r) => (timer = setTimeout(r, ms)))]).finally(() => clearTimeout(timer));
}
