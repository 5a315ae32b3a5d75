import type { Logger } from 'pino';
import type { ClusterLink } from './cluster-link.ts';
import { Inbox, type InboxSettings } from './inbox.ts';
import type { ClusterApi, CommandContext, HubApi, SessionApi, UserRef } from './module-api.ts';
import { OutFrame } from './out-frame.ts';
import type { Session } from './session.ts';
import { parseChannel, userChannel } from '../bus/bus.ts';
import type { InboxData } from '../store/inbox-data.ts';

export type HubEvents = {
  online(user: UserRef): void;
  offline(user: UserRef, time: number): void;
  login(session: Session, user: UserRef): void;
  logout(session: Session, user: UserRef): void;
};

/** With --bus: the cluster, and how to name a user from an id (a presence change names only the id). */
export type HubCluster = { link: ClusterLink; userById(id: number): Promise<UserRef | null> };

/**
 * Who is connected as whom, and pushes to them. What is delivered to one
 * user (a `send`, a friend request) goes through the user's inbox (see
 * inbox.ts): appended durably first, then pushed to the connections.
 *
 * In a cluster (--bus) the hub serves its own connections directly as ever
 * and publishes for the other nodes' (cluster-link.ts): pushes to a user on
 * the user's channel, inbox entries with their seq; what the others publish
 * it delivers to its connections. Online and offline are the cluster's
 * (the presence registry's), heard by every node.
 */
export class Hub implements HubApi {
  readonly #byUser = new Map<number, Set<Session>>();
  readonly #events: HubEvents;
  readonly #link: ClusterLink | undefined;
  readonly #log: Logger;
  readonly inbox: Inbox;
  readonly stats = { pushed: 0, stored: 0, lost: 0, remote: 0 };

  constructor(data: InboxData, log: Logger, settings: InboxSettings, events: HubEvents, cluster?: HubCluster) {
    this.#events = events;
    this.#log = log;
    this.#link = cluster?.link;
    this.inbox = new Inbox(data, { sessionsOf: (id) => this.#byUser.get(id) ?? [], stats: this.stats, bus: cluster?.link.bus }, log, settings);
    if (cluster !== undefined) this.#joinCluster(cluster);
  }

  get cluster(): ClusterApi | undefined {
    return this.#link;
  }

  #joinCluster({ link, userById }: HubCluster): void {
    link.on('push', (channel, fields) => {
      const to = parseChannel(channel);
      if (to === undefined || !('user' in to) || !Array.isArray(fields.f)) return;
      this.stats.remote++;
      this.pushFrameToUser(to.user, OutFrame.of(fields.f as string[]));
    });
    link.on('inbox', (channel, fields, message) => {
      const to = parseChannel(channel);
      const seq = (message as { seq?: number }).seq;
      if (to === undefined || !('user' in to) || seq === undefined || typeof fields.d !== 'string') return;
      this.stats.remote++;
      this.inbox.remote(to.user, { seq, kind: Number(fields.k), pending: Number(fields.p), payload: fields.d });
    });
    // pushes may have been lost while Redis was away: the store has every inbox entry
    link.onResubscribed(() => this.inbox.recover([...this.#byUser.keys()]));
    // one after the other: a quick online-offline must not be told offline-online when its name look-ups finish out of order
    let told = Promise.resolve();
    link.presence?.onChange((userId, online) => {
      const time = Date.now();
      told = told.then(() =>
        userById(userId).then(
          (user) => {
            if (user === null) return;
            if (online) this.#events.online(user);
            else this.#events.offline(user, time);
          },
          (err: unknown) => this.#log.warn({ err: (err as Error).message, user: userId }, 'presence change not announced'),
        ),
      );
    });
  }

  /**
   * In a cluster, a login about to be answered: the user's channels are
   * subscribed first (resolves once active); releaseLogin() after the
   * attach (or the failure). Undefined for a server alone.
   */
  prepareLogin(userId: number): Promise<void> | undefined {
    return this.#link?.hold(userId);
  }

  releaseLogin(userId: number): void {
    this.#link?.release(userId);
  }

  /** The connection is `user` now (after its login's reply was written). */
  attach(session: Session, user: UserRef): void {
    if (session.user?.id === user.id) {
      this.inbox.loggedIn(session, user, true); // a new login all the same: an inbox connection's stream stops
      return;
    }
    if (session.user !== null) this.detach(session);
    session.user = user;
    let set = this.#byUser.get(user.id);
    const first = set === undefined;
    if (set === undefined) {
      set = new Set();
      this.#byUser.set(user.id, set);
    }
    set.add(session);
    this.#events.login(session, user);
    if (first) this.#firstHere(user);
    this.inbox.loggedIn(session, user, false);
  }

  detach(session: Session): void {
    this.inbox.loggedOut(session);
    const user = session.user;
    if (user === null) return;
    session.user = null;
    const set = this.#byUser.get(user.id);
    if (set === undefined || !set.delete(session)) return;
    this.#events.logout(session, user);
    if (set.size === 0) {
      this.#byUser.delete(user.id);
      this.#lastHere(user);
    }
  }

  #firstHere(user: UserRef): void {
    const link = this.#link;
    if (link === undefined) {
      this.#events.online(user);
      return;
    }
    void link.hold(user.id);
    // the cluster says whether that made the user online (onChange, on every node)
    if (link.presence !== undefined) void link.presence.userConnected(user.id);
    else this.#events.online(user);
  }

  #lastHere(user: UserRef): void {
    const link = this.#link;
    if (link === undefined) {
      this.#events.offline(user, Date.now());
      return;
    }
    link.release(user.id);
    if (link.presence !== undefined) void link.presence.userDisconnected(user.id);
    else this.#events.offline(user, Date.now());
  }

  logout(session: SessionApi): void {
    if (session.user !== null && this.#byUser.get(session.user.id)?.has(session as Session)) this.detach(session as Session);
  }

  isOnline(userId: number): boolean {
    return this.#byUser.has(userId);
  }

  sessionsOf(userId: number): readonly SessionApi[] {
    const set = this.#byUser.get(userId);
    return set === undefined ? [] : [...set];
  }

  pushToUser(userId: number, fields: readonly string[]): number {
    this.#publishPush(userId, fields);
    return this.pushFrameToUser(userId, OutFrame.of(fields));
  }

  /** To the user's connections on the other nodes (after the commit the caller runs in). */
  #publishPush(userId: number, fields: readonly string[]): void {
    this.#link?.publish(userChannel(userId), 'push', { f: fields });
  }

  pushFrameToUser(userId: number, frame: OutFrame, written?: (err?: Error | null) => void): number {
    const set = this.#byUser.get(userId);
    if (set === undefined) return 0;
    let reached = 0;
    for (const session of set) if (session.pushFrame(frame, written)) reached++;
    this.stats.pushed += reached;
    return reached;
  }

  pushToUsers(userIds: Iterable<number>, fields: readonly string[]): number {
    if (this.#link === undefined) return this.pushLocal(userIds, fields);
    const ids = [...userIds];
    for (const id of ids) this.#publishPush(id, fields);
    return this.pushLocal(ids, fields);
  }

  pushLocal(userIds: Iterable<number>, fields: readonly string[]): number {
    const frame = OutFrame.of(fields);
    let reached = 0;
    for (const id of userIds) reached += this.pushFrameToUser(id, frame);
    return reached;
  }

  /** Appends to the user's inbox (whatever the mailbox holds), then pushes to their connections. */
  deliver(user: UserRef, fields: readonly string[], cause?: CommandContext): Promise<'pushed' | 'stored'> {
    return this.inbox.deliver(user, fields, cause);
  }
}
