import { CommandError } from './errors.ts';
import type { HubApi, SessionApi, UserRef } from './module-api.ts';
import { OutFrame } from './out-frame.ts';
import type { Session } from './session.ts';
import type { Store } from '../store/store.ts';

export type HubEvents = {
  online(user: UserRef): void;
  offline(user: UserRef, time: number): void;
  login(session: Session, user: UserRef): void;
  logout(session: Session, user: UserRef): void;
};

/**
 * Which sessions belong to which user, and delivery to all of them. What
 * cannot be delivered (no connection) goes to the user's durable mailbox.
 */
export class Hub implements HubApi {
  readonly #byUser = new Map<number, Set<Session>>();
  readonly #store: Store;
  readonly #mailboxSize: () => number;
  readonly #events: HubEvents;
  /** Highest mailbox id being written to a connection, per user, so a second login does not repeat it. */
  readonly #inFlight = new Map<number, number>();
  readonly stats = { pushed: 0, stored: 0, lost: 0 };

  constructor(store: Store, mailboxSize: () => number, events: HubEvents) {
    this.#store = store;
    this.#mailboxSize = mailboxSize;
    this.#events = events;
  }

  attach(session: Session, user: UserRef): void {
    if (session.user?.id === user.id) return;
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
    this.#drainMailbox(session, user);
  }

  detach(session: Session): void {
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

  deliver(user: UserRef, fields: readonly string[]): 'pushed' | 'stored' {
    const frame = OutFrame.of(fields);
    if (this.#byUser.has(user.id)) {
      // A write that fails (the connection died under it) falls back to the mailbox.
      let failed = 0;
      const reached = this.pushFrameToUser(user.id, frame, (err) => {
        if (err && ++failed === reached) this.#storeLate(user, frame);
      });
      if (reached > 0) return 'pushed';
    }
    this.#storeNow(user, frame.payload);
    return 'stored';
  }

  #storeNow(user: UserRef, payload: string): void {
    if (this.#store.mailboxCount(user.id) >= this.#mailboxSize()) {
      throw new CommandError('mailbox_full', `${user.name} has too many stored messages`);
    }
    this.#store.mailboxAdd(user.id, payload);
    this.stats.stored++;
  }

  /** After the sender had its `ok`: kept even past the mailbox limit rather than lost. */
  #storeLate(user: UserRef, frame: OutFrame): void {
    try {
      this.#store.mailboxAdd(user.id, frame.payload);
      this.stats.stored++;
    } catch {
      this.stats.lost++;
    }
  }

  /**
   * PROTOCOL.md section 3: stored messages follow the login's reply, oldest
   * first, and are deleted only once written to the connection.
   */
  #drainMailbox(session: Session, user: UserRef): void {
    const after = this.#inFlight.get(user.id) ?? 0;
    const rows = this.#store.mailboxAfter(user.id, after, this.#mailboxSize() + 1000);
    if (rows.length === 0) return;
    const lastId = rows[rows.length - 1]!.id;
    this.#inFlight.set(user.id, lastId);
    let delivered = 0;
    for (let i = 0; i < rows.length; i++) {
      const last = i === rows.length - 1;
      const ok = session.pushFrame(new OutFrame(rows[i]!.payload), last ? (err) => this.#written(user.id, lastId, err) : undefined);
      if (!ok) break;
      delivered++;
    }
    if (delivered < rows.length) this.#written(user.id, lastId, new Error('connection closed'));
  }

  #written(userId: number, lastId: number, err: Error | null | undefined): void {
    if (this.#inFlight.get(userId) === lastId) this.#inFlight.delete(userId);
    if (err) return; // kept for the next login
    try {
      this.#store.mailboxDeleteUpTo(userId, lastId);
    } catch {
      // Still stored: delivered again at the next login rather than lost.
    }
  }
}
