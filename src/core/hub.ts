import { CommandError } from './errors.ts';
import type { HubApi, SessionApi, UserRef } from './module-api.ts';
import { OutFrame } from './out-frame.ts';
import type { Session } from './session.ts';
import type { CoreData, StoredPush } from '../store/core-data.ts';
import type { Logger } from 'pino';

/** Stored messages read from the store at a time while a mailbox drains. */
const DRAIN_PAGE = 64;

export type HubEvents = {
  online(user: UserRef): void;
  offline(user: UserRef, time: number): void;
  login(session: Session, user: UserRef): void;
  logout(session: Session, user: UserRef): void;
};

export class Hub implements HubApi {
  readonly #byUser = new Map<number, Set<Session>>();
  readonly #data: CoreData;
  readonly #log: Logger;
  readonly #mailboxSize: () => number;
  readonly #events: HubEvents;
  /** The session draining each user's mailbox: one drain per user at a time, so nothing goes out twice. */
  readonly #draining = new Map<number, Session>();
  /** How to stop a session's drain when it goes away. */
  readonly #drains = new Map<Session, () => void>();
  readonly #drainWindow: () => number;
  readonly stats = { pushed: 0, stored: 0, lost: 0 };

  constructor(data: CoreData, log: Logger, mailboxSize: () => number, drainWindow: () => number, events: HubEvents) {
    this.#data = data;
    this.#log = log;
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
    if (!this.#draining.has(user.id)) this.#drainMailbox(session, user);
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

  async deliver(user: UserRef, fields: readonly string[]): Promise<'pushed' | 'stored'> {
    const frame = OutFrame.of(fields);
    if (this.#byUser.has(user.id)) {
      // A write that fails (the connection died under it) falls back to the mailbox.
      let failed = 0;
      const reached = this.pushFrameToUser(user.id, frame, (err) => {
        if (err && ++failed === reached) this.#storeLate(user, frame);
      });
      if (reached > 0) return 'pushed';
    }
    if (!(await this.#data.mailboxAdd(user.id, frame.payload, this.#mailboxSize()))) {
      throw new CommandError('mailbox_full', `${user.name} has too many stored messages`);
    }
    this.stats.stored++;
    return 'stored';
  }

  /** After the sender had its `ok`: kept even past the mailbox limit rather than lost. */
  #storeLate(user: UserRef, frame: OutFrame): void {
    this.#data.mailboxAdd(user.id, frame.payload).then(
      () => void this.stats.stored++,
      () => void this.stats.lost++,
    );
  }

  /**
   * PROTOCOL.md section 3: stored messages follow the login's reply, oldest
   * first, and are deleted only once written to the connection. They are
   * read a page at a time and pushed as the kernel takes them, like any
   * other traffic, so a big mailbox is never all in memory and never outruns
   * the outbound bound by itself; what was written is deleted page by page.
   */
  #drainMailbox(session: Session, user: UserRef): void {
    let stopped = false;
    let wake: (() => void) | undefined;
    const stop = () => {
      stopped = true;
      wake?.();
    };
    this.#draining.set(user.id, session);
    this.#drains.set(session, stop);
    const window = { unsettled: 0, pending: 0, written: [] as number[] };
    const settled = () => new Promise<void>((resolve) => (wake = resolve));
    // exactly the rows written, not a range: on PostgreSQL a lower id can commit after a higher one was read
    const deleteWritten = async () => {
      if (window.written.length === 0) return;
      const ids = window.written;
      window.written = [];
      await this.#data.mailboxDelete(user.id, ids);
    };
    const run = async () => {
      let after = 0;
      while (!stopped) {
        const rows: StoredPush[] = await this.#data.mailboxAfter(user.id, after, DRAIN_PAGE);
        if (rows.length === 0) break;
        for (const row of rows) {
          while (!stopped && window.unsettled > 0 && window.unsettled + row.payload.length > this.#drainWindow()) await settled();
          if (stopped) break;
          const size = row.payload.length;
          window.unsettled += size;
          window.pending++;
          const ok = session.pushFrame(new OutFrame(row.payload), (err) => {
            if (!err) window.written.push(row.id);
            window.unsettled -= size;
            window.pending--;
            wake?.();
          });
          if (!ok) {
            window.unsettled -= size;
            window.pending--;
            stopped = true;
          }
          after = row.id;
        }
        // a page's rows are deleted once every write of it has settled
        while (window.pending > 0) await settled();
        await deleteWritten();
      }
      while (window.pending > 0) await settled();
      await deleteWritten();
    };
    run()
      .catch((err: unknown) => this.#log.warn({ err: (err as Error).message, user: user.name }, 'mailbox drain stopped; the rest stays stored'))
      .finally(() => {
        if (this.#draining.get(user.id) === session) this.#draining.delete(user.id);
        if (this.#drains.get(session) === stop) this.#drains.delete(session);
        // cut short (this connection went away): another connection of the user takes over the rest
        const heir = stopped ? [...(this.#byUser.get(user.id) ?? [])].at(-1) : undefined;
        if (heir !== undefined && !this.#draining.has(user.id)) this.#drainMailbox(heir, user);
      });
  }
}
