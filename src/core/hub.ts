import type { Logger } from 'pino';
import { Inbox, type InboxSettings } from './inbox.ts';
import type { HubApi, SessionApi, UserRef } from './module-api.ts';
import { OutFrame } from './out-frame.ts';
import type { Session } from './session.ts';
import type { InboxData } from '../store/inbox-data.ts';

export type HubEvents = {
  online(user: UserRef): void;
  offline(user: UserRef, time: number): void;
  login(session: Session, user: UserRef): void;
  logout(session: Session, user: UserRef): void;
};

/**
 * Who is connected as whom, and pushes to them. What is delivered to one
 * user (a `send`, a friend request) goes through the user's inbox (see
 * inbox.ts): appended durably first, then pushed to the connections.
 */
export class Hub implements HubApi {
  readonly #byUser = new Map<number, Set<Session>>();
  readonly #events: HubEvents;
  readonly inbox: Inbox;
  readonly stats = { pushed: 0, stored: 0, lost: 0 };

  constructor(data: InboxData, log: Logger, settings: InboxSettings, events: HubEvents) {
    this.#events = events;
    this.inbox = new Inbox(data, { sessionsOf: (id) => this.#byUser.get(id) ?? [], stats: this.stats }, log, settings);
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
    if (first) this.#events.online(user);
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
      this.#events.offline(user, Date.now());
    }
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
    return this.pushFrameToUser(userId, OutFrame.of(fields));
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
    const frame = OutFrame.of(fields);
    let reached = 0;
    for (const id of userIds) reached += this.pushFrameToUser(id, frame);
    return reached;
  }

  /** Appends to the user's inbox (whatever the mailbox holds), then pushes to their connections. */
  deliver(user: UserRef, fields: readonly string[]): Promise<'pushed' | 'stored'> {
    return this.inbox.deliver(user, fields);
  }
}
