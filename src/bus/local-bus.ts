/**
 * The bus of one process (no --bus): nothing crosses the network. A server
 * alone has no other node, so publish() reaches nobody and costs a counter
 * increment: today's in-process hub and today's numbers. Several LocalBuses
 * given one LocalBroker behave as nodes of one cluster inside a process, so
 * the hub's cross-node paths can be tested without Redis.
 */
import { emptyStats, HandlerSet, LONE_LEASE, type Bus, type BusMessage, type BusStats, type Delivered, type Lease, type MessageHandler } from './bus.ts';

/** The in-process stand-in for Redis: which buses are subscribed to which channel. */
export class LocalBroker {
  readonly #subscribers = new Map<string, Set<LocalBus>>();

  add(channel: string, bus: LocalBus): void {
    let set = this.#subscribers.get(channel);
    if (set === undefined) this.#subscribers.set(channel, (set = new Set()));
    set.add(bus);
  }

  remove(channel: string, bus: LocalBus): void {
    const set = this.#subscribers.get(channel);
    if (set === undefined) return;
    set.delete(bus);
    if (set.size === 0) this.#subscribers.delete(channel);
  }

  /** Delivers to every subscriber but the publisher, on a later turn as a network would. */
  publish(channel: string, from: LocalBus, message: Delivered): void {
    const set = this.#subscribers.get(channel);
    if (set === undefined) return;
    for (const bus of set) if (bus !== from) queueMicrotask(() => bus.deliver(channel, message));
  }
}

export class LocalBus implements Bus {
  readonly nodeId: string;
  readonly up = true;
  readonly stats: BusStats = emptyStats();
  readonly #broker: LocalBroker | undefined;
  readonly #refs = new Map<string, number>();
  readonly #messages = new HandlerSet<[string, Delivered]>(() => this.stats.malformed++);
  readonly #resubscribed = new HandlerSet<[]>(() => {});
  #closed = false;

  /** Without a broker the bus is alone: publish() reaches nobody. */
  constructor(nodeId: string, broker?: LocalBroker) {
    this.nodeId = nodeId;
    this.#broker = broker;
  }

  get channels(): number {
    return this.#refs.size;
  }

  async subscribe(channel: string): Promise<void> {
    if (this.#closed) return;
    const n = this.#refs.get(channel) ?? 0;
    this.#refs.set(channel, n + 1);
    if (n === 0) this.#broker?.add(channel, this);
  }

  async unsubscribe(channel: string): Promise<void> {
    const n = this.#refs.get(channel);
    if (n === undefined) return;
    if (n > 1) {
      this.#refs.set(channel, n - 1);
      return;
    }
    this.#refs.delete(channel);
    this.#broker?.remove(channel, this);
  }

  publish(channel: string, message: BusMessage): void {
    if (this.#closed) {
      this.stats.dropped++;
      return;
    }
    this.stats.published++;
    this.#broker?.publish(channel, this, { ...message, origin: this.nodeId });
  }

  onMessage(handler: MessageHandler): () => void {
    return this.#messages.add(handler);
  }

  /** The local bus never loses its connection: the handlers are kept but never called. */
  onResubscribed(handler: () => void): () => void {
    return this.#resubscribed.add(handler);
  }

  /** Called by the broker. */
  deliver(channel: string, message: Delivered): void {
    if (this.#closed || !this.#refs.has(channel)) return;
    this.stats.received++;
    this.#messages.call(channel, message);
  }

  /** Always granted, even with a broker: the nodes of an in-process cluster share no leases. */
  lease(_name: string): Lease {
    return LONE_LEASE;
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const channel of this.#refs.keys()) this.#broker?.remove(channel, this);
    this.#refs.clear();
  }
}
