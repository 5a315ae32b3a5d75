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
  /** Mailbox drains waiting for a connection to read; ended when it goes away. */
  readonly #drains = new Map<Session, () => void>();
  readonly #drainWindow: () => number;
  readonly stats = { pushed: 0, stored: 0, lost: 0 };

  constructor(store: Store, mailboxSize: () => number, drainWindow: () => number, events: HubEvents) {
    this.#store = store;
    this.#mailboxSize = mailboxSize;
    this.#drainWindow = drainWindow;
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
    this.#drains.get(session)?.();
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
    // Delete exactly what reached the connection, once every write has settled:
    // a drain cut short (slow consumer, a dropped connection) repeats nothing
    // that was written and loses nothing that was not. `pending` counts the
    // writes in flight plus one for the drain itself until it has finished.
    let pending = 1;
    let writtenUpTo = 0;
    let next = 0;
    let unsettledBytes = 0; // pushed but not yet handed to the kernel
    let waiting = false;
    const settle = () => {
      if (--pending > 0) return;
      if (this.#inFlight.get(user.id) === lastId) this.#inFlight.delete(user.id);
      if (writtenUpTo > 0) this.#deleteUpTo(user.id, writtenUpTo);
    };
    const finish = () => {
      if (this.#drains.get(session) !== finish) return;
      this.#drains.delete(session);
      settle();
    };
    // Pushed as the kernel takes them, like any other traffic: a big mailbox
    // must not outrun the outbound bound by itself. Each settled write lets
    // the next rows go.
    const pushMore = () => {
      waiting = false;
      while (next < rows.length && this.#drains.get(session) === finish) {
        if (unsettledBytes > 0 && unsettledBytes + rows[next]!.payload.length > this.#drainWindow()) {
          waiting = true;
          return;
        }
        const row = rows[next++]!;
        const size = row.payload.length;
        pending++;
        unsettledBytes += size;
        const ok = session.pushFrame(new OutFrame(row.payload), (err) => {
          if (!err && row.id > writtenUpTo) writtenUpTo = row.id;
          unsettledBytes -= size;
          if (waiting) pushMore();
          settle();
        });
        if (!ok) {
          pending--;
          break;
        }
      }
      finish();
    };
    this.#drains.set(session, finish);
    pushMore();
  }

  #deleteUpTo(userId: number, id: number): void {
    try {
      this.#store.mailboxDeleteUpTo(userId, id);
    } catch {
      // Still stored: delivered again at the next login rather than lost.
    }
  }
}
