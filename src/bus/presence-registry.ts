/**
 * Who is online in the whole cluster (CLUSTER.md, "who is online"). Each
 * node counts its own users' connections in memory and tells Redis only when
 * a user's first connection on the node opens or its last closes; the
 * scripts of presence-scripts.ts decide atomically whether that was the
 * user's first connection anywhere (online) or last (offline) and announce
 * it in the same step on PRESENCE_CHANNEL, so each change is announced once
 * for the cluster, in order. Every node (the announcing one included) hears each
 * change through onChange and pushes `presence,<user>,online|offline` to its
 * local friends and room co-members.
 *
 * A node refreshes its heartbeat every third of --presence-ttl; every node
 * reaps, about once a second, the nodes whose heartbeat expired (a node
 * killed without a word), taking their users offline for everyone within
 * the TTL plus a second or two. stop() (SIGTERM) takes this node's users
 * off at once. When Redis was away (restarted, unreachable, or this node
 * was paused long enough to be reaped) the node writes its whole table
 * again and the differences are announced.
 *
 * While Redis is down nothing is announced: the counts are kept and
 * reconciled when it is back, and the changes made meanwhile announced then.
 * Announcements are doorbells like every bus message: a node whose
 * subscription dropped (Redis restarted, its connection lost) may miss some,
 * so once it is subscribed again, and the other nodes have had time to write
 * their tables again, it reads who is online (ts:everyone) and tells its
 * handlers every difference from what it had heard.
 */
import type { Logger } from 'pino';
import { HandlerSet, PRESENCE_CHANNEL, type Bus, type Delivered } from './bus.ts';
import { DEPART, JOIN, LEAVE, REAP, SYNC } from './presence-scripts.ts';
import { Script, type RedisClient } from './redis-client.ts';

export type PresenceHandler = (userId: number, online: boolean) => void;

export type PresenceOptions = {
  bus: Bus;
  /** The command connection (RedisBus.redis). */
  redis: RedisClient;
  nodeId: string;
  /** --presence-ttl in ms. */
  ttlMs: number;
  log: Logger;
  /** How often this node looks for dead nodes; default a second (or a third of the TTL when shorter). */
  reapEveryMs?: number;
  /** After a resubscription, how long to let the other nodes write their tables again before catching up; default 3 s (the reconnection back-off is at most about 2 s). */
  catchUpAfterMs?: number;
};

export type PresenceStats = {
  /** Changes this node announced (it made them, or reaped them). */
  announced: number;
  /** Changes heard, from any node, and handed to the handlers. */
  heard: number;
  /** Changes heard after a later one for the same user: dropped. */
  stale: number;
  /** Nodes this node reaped. */
  reaped: number;
  /** Times this node wrote its whole table again. */
  synced: number;
  /** Changes found by catching up after a resubscription (missed announcements). */
  caughtUp: number;
};

const JOIN_SCRIPT = new Script(JOIN);
const LEAVE_SCRIPT = new Script(LEAVE);
const SYNC_SCRIPT = new Script(SYNC);
const REAP_SCRIPT = new Script(REAP);
const DEPART_SCRIPT = new Script(DEPART);

/** How long stop() waits for Redis to confirm the node's departure. */
const STOP_WAIT_MS = 1000;

/** Users whose last change number is remembered, to drop one that arrives late. */
const REMEMBERED = 100_000;

type Change = [userId: number, online: boolean, seq: number];

/** A script's {user, 1|0, ...} list, numbered from `first`. */
function readChanges(first: number, flat: (string | number)[]): Change[] {
  const changes: Change[] = [];
  for (let i = 0; i < flat.length; i += 2) changes.push([Number(flat[i]), Number(flat[i + 1]) === 1, first + i / 2]);
  return changes;
}

export class PresenceRegistry {
  readonly nodeId: string;
  readonly stats: PresenceStats = { announced: 0, heard: 0, stale: 0, reaped: 0, synced: 0, caughtUp: 0 };
  readonly #bus: Bus;
  readonly #redis: RedisClient;
  readonly #ttlMs: number;
  readonly #log: Logger;
  /** This node's users and their connection counts: the truth Redis is kept in line with. */
  readonly #local = new Map<number, number>();
  /** Users whose last connection here closed while Redis could not be told (bounded; told at the next sync). */
  readonly #departed = new Set<number>();
  /** The last change heard per user: one arriving late is dropped, one saying what is already known is not repeated. */
  readonly #last = new Map<number, { seq: number; online: boolean }>();
  readonly #handlers: HandlerSet<[number, boolean]>;
  readonly #timers: NodeJS.Timeout[] = [];
  readonly #offMessage: () => void;
  readonly #offResubscribed: () => void;
  readonly #catchUpAfterMs: number;
  #catchUpTimer: NodeJS.Timeout | undefined;
  readonly #onReady = () => void this.#sync('reconnected');
  /** A script failed: Redis may not hold what #local says, so the next beat writes it all. */
  #dirty = false;
  #syncing: Promise<void> | undefined;
  #reaping = false;
  #stopped = false;

  private constructor(options: PresenceOptions) {
    this.nodeId = options.nodeId;
    this.#bus = options.bus;
    this.#redis = options.redis;
    this.#ttlMs = options.ttlMs;
    this.#log = options.log.child({ component: 'presence' });
    this.#handlers = new HandlerSet((err) => this.#log.error({ err }, 'presence handler failed'));
    this.#catchUpAfterMs = options.catchUpAfterMs ?? 3000;
    this.#offMessage = this.#bus.onMessage((channel, message) => this.#hear(channel, message));
    this.#offResubscribed = this.#bus.onResubscribed(() => this.#scheduleCatchUp());
  }

  /** Subscribes to the changes, writes this node's (empty) table, and starts the heartbeat and the reaper. */
  static async start(options: PresenceOptions): Promise<PresenceRegistry> {
    const r = new PresenceRegistry(options);
    await r.#bus.subscribe(PRESENCE_CHANNEL);
    r.#redis.on('ready', r.#onReady);
    await r.#sync('start');
    const beat = setInterval(() => void r.#beat(), Math.max(100, Math.floor(options.ttlMs / 3)));
    const reap = setInterval(() => void r.#reap(), options.reapEveryMs ?? Math.max(100, Math.min(1000, Math.floor(options.ttlMs / 3))));
    r.#timers.push(beat, reap);
    return r;
  }

  /** Adds a handler for every change in the cluster, this node's own included; returns its removal. */
  onChange(handler: PresenceHandler): () => void {
    return this.#handlers.add(handler);
  }

  /**
   * A connection of the user opened on this node. Resolves true when that
   * made the user online in the cluster (the change is then announced; the
   * handlers have run). Never rejects: with Redis down it is counted here and
   * written when Redis is back.
   */
  async userConnected(userId: number): Promise<boolean> {
    if (this.#stopped) return false;
    const n = (this.#local.get(userId) ?? 0) + 1;
    this.#local.set(userId, n);
    if (n > 1) return false;
    this.#departed.delete(userId);
    return this.#change(JOIN_SCRIPT, userId, true);
  }

  /** A connection of the user closed on this node. Resolves true when that made the user offline in the cluster. */
  async userDisconnected(userId: number): Promise<boolean> {
    if (this.#stopped) return false;
    const n = this.#local.get(userId);
    if (n === undefined) return false;
    if (n > 1) {
      this.#local.set(userId, n - 1);
      return false;
    }
    this.#local.delete(userId);
    return this.#change(LEAVE_SCRIPT, userId, false);
  }

  /** Whether the user has a connection on any node (this node's own knowledge while Redis is down). */
  async isOnline(userId: number): Promise<boolean> {
    if (this.#local.has(userId)) return true;
    if (!this.#redis.isReady) return false;
    try {
      return (await this.#redis.exists(`ts:where:${userId}`)) === 1;
    } catch {
      return false;
    }
  }

  /** The users among these that are online anywhere (one pipelined round trip). */
  async onlineAmong(userIds: readonly number[]): Promise<Set<number>> {
    const online = new Set(userIds.filter((id) => this.#local.has(id)));
    const ask = userIds.filter((id) => !online.has(id));
    if (ask.length === 0 || !this.#redis.isReady) return online;
    try {
      const found = await Promise.all(ask.map((id) => this.#redis.exists(`ts:where:${id}`)));
      for (const [i, id] of ask.entries()) if (found[i] === 1) online.add(id);
    } catch {
      // Redis went away meanwhile: this node's own knowledge
    }
    return online;
  }

  /** Users with a connection on this node. */
  get localUsers(): number {
    return this.#local.size;
  }

  /**
   * SIGTERM: this node's users offline for everyone at once (announced),
   * then no more heartbeats. Waits for Redis's answer at most STOP_WAIT_MS:
   * a stop is not held by a Redis that is slow to answer (what was sent
   * still gets there; if it does not, the others reap this node).
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#halt();
    this.#local.clear();
    void this.#bus.unsubscribe(PRESENCE_CHANNEL);
    const departed = DEPART_SCRIPT.run(this.#redis, [], [this.nodeId]).then(
      () => undefined,
      (err: unknown) => err,
    );
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), STOP_WAIT_MS)));
    const outcome = await Promise.race([departed, late]);
    clearTimeout(timer);
    // Redis is away: the heartbeat expires and the other nodes reap this one
    if (outcome === 'late') this.#log.warn(`Redis did not confirm this node's departure within ${STOP_WAIT_MS} ms; the others reap it if it did not get there`);
    else if (outcome !== undefined) this.#log.warn({ err: String(outcome) }, "could not remove this node's presence; the others will reap it");
  }

  /** As if the process were killed: heartbeats and reaping stop, Redis is left as it is (for the fault tests). */
  halt(): void {
    this.#halt();
  }

  #halt(): void {
    this.#stopped = true;
    for (const t of this.#timers.splice(0)) clearInterval(t);
    clearTimeout(this.#catchUpTimer);
    this.#redis.off('ready', this.#onReady);
    this.#offMessage();
    this.#offResubscribed();
  }

  /** Several resubscriptions in a row (a flapping connection) make one catch-up, after the last. */
  #scheduleCatchUp(): void {
    if (this.#stopped) return;
    clearTimeout(this.#catchUpTimer);
    this.#catchUpTimer = setTimeout(() => void this.#catchUp(), this.#catchUpAfterMs);
  }

  /**
   * Reads who is online and tells the handlers what differs from what was
   * heard: those heard online and now absent go offline, those present and
   * not heard online come online. What the map forgot may be told again.
   */
  async #catchUp(): Promise<void> {
    if (this.#stopped || !this.#redis.isReady) return;
    let everyone: Set<number>;
    try {
      everyone = new Set((await this.#redis.sMembers('ts:everyone')).map(Number));
    } catch {
      return this.#scheduleCatchUp();
    }
    if (this.#stopped) return;
    const changes: [number, boolean][] = [];
    for (const [userId, last] of this.#last) if (last.online !== everyone.has(userId)) changes.push([userId, !last.online]);
    for (const userId of everyone) if (this.#last.get(userId)?.online !== true) changes.push([userId, true]);
    const seen = new Set<number>();
    for (const [userId, online] of changes) {
      if (seen.has(userId)) continue;
      seen.add(userId);
      // the number stays: any change announced after this read is newer and still taken
      const seq = this.#last.get(userId)?.seq ?? 0;
      this.#remember(userId, seq, online);
      this.stats.caughtUp++;
      this.#handlers.call(userId, online);
    }
    if (changes.length > 0) this.#log.info({ changes: seen.size }, 'presence caught up after a resubscription');
  }

  async #change(script: Script, userId: number, online: boolean): Promise<boolean> {
    let seq: number;
    try {
      seq = Number(await script.run(this.#redis, [], [this.nodeId, userId]));
    } catch (err) {
      this.#dirty = true;
      if (!online && this.#departed.size < REMEMBERED) this.#departed.add(userId);
      this.#log.debug({ err: String(err) }, 'presence change not written; written when Redis is back');
      return false;
    }
    if (seq === 0) return false;
    this.#announced([[userId, online, seq]]);
    return true;
  }

  /** Refreshes the heartbeat; when it had expired (or a write failed), writes the whole table again. */
  async #beat(): Promise<void> {
    if (this.#stopped || !this.#redis.isReady) return;
    if (this.#dirty) return this.#sync('a write failed');
    try {
      const alive = await this.#redis.pExpire(`ts:node:${this.nodeId}`, this.#ttlMs);
      if (alive !== 1) await this.#sync('heartbeat had expired');
    } catch {
      this.#dirty = true;
    }
  }

  /** One at a time: a second request while one runs waits for it and runs after (the table may have changed). */
  #sync(why: string): Promise<void> {
    const previous = this.#syncing ?? Promise.resolve();
    const next = previous.then(() => this.#syncNow(why));
    this.#syncing = next;
    void next.then(() => {
      if (this.#syncing === next) this.#syncing = undefined;
    });
    return next;
  }

  async #syncNow(why: string): Promise<void> {
    if (this.#stopped || !this.#redis.isReady) return;
    this.#dirty = false;
    try {
      const users = [...this.#local.keys()];
      const departed = [...this.#departed];
      this.#departed.clear();
      let reply: [number, (string | number)[]];
      try {
        reply = (await SYNC_SCRIPT.run(this.#redis, [], [this.nodeId, this.#ttlMs, users.length, ...users, ...departed])) as typeof reply;
      } catch (err) {
        for (const u of departed) if (!this.#local.has(u)) this.#departed.add(u);
        throw err;
      }
      const changes = readChanges(reply[0], reply[1]);
      this.stats.synced++;
      if (why !== 'start' || changes.length > 0) this.#log.info({ why, users: users.length, changes: changes.length }, 'presence written again');
      this.#announced(changes);
    } catch (err) {
      this.#dirty = true;
      this.#log.debug({ err: String(err) }, 'presence sync failed; retried on the next heartbeat');
    }
  }

  async #reap(): Promise<void> {
    if (this.#stopped || this.#reaping || !this.#redis.isReady) return;
    this.#reaping = true;
    try {
      const [first, flat, dead] = (await REAP_SCRIPT.run(this.#redis, [], [this.nodeId])) as [number, (string | number)[], string[]];
      if (dead.length === 0) return;
      this.stats.reaped += dead.length;
      const changes = readChanges(first, flat);
      this.#log.info({ nodes: dead, users: changes.length }, 'nodes without a heartbeat: their users are offline');
      this.#announced(changes);
    } catch {
      // Redis away: the next round
    } finally {
      this.#reaping = false;
    }
  }

  /** The script announced these to the other nodes; this one hears them here (the bus does not echo a node's own). */
  #announced(changes: Change[]): void {
    this.stats.announced += changes.length;
    for (const c of changes) this.#accept(c);
  }

  #hear(channel: string, message: Delivered): void {
    if (channel !== PRESENCE_CHANNEL || message.kind !== 'presence') return;
    const list = message.fields?.c;
    if (!Array.isArray(list)) return;
    for (const c of list) {
      if (!Array.isArray(c) || !Number.isSafeInteger(c[0]) || !Number.isSafeInteger(c[2])) continue;
      this.#accept([c[0] as number, c[1] === 1, c[2] as number]);
    }
  }

  #accept([userId, online, seq]: Change): void {
    if (this.#stopped) return;
    const last = this.#last.get(userId);
    if (last !== undefined && last.seq >= seq) {
      this.stats.stale++;
      return;
    }
    this.#remember(userId, seq, online);
    // a table written again after Redis lost it announces users already known online: not a change
    if (last !== undefined && last.online === online) return;
    this.stats.heard++;
    this.#handlers.call(userId, online);
  }

  #remember(userId: number, seq: number, online: boolean): void {
    this.#last.delete(userId); // re-inserted last: the oldest entries go first when the map is full
    this.#last.set(userId, { seq, online });
    if (this.#last.size > REMEMBERED) this.#last.delete(this.#last.keys().next().value!);
  }
}
