/**
 * Direct messages from the inbox (DELIVERY.md): entries become
 * conversations, the user's own sends are shown from their carbons (the one
 * truth, whichever device sent them, this one included: nothing is echoed
 * locally), and sends go out under `once` keys, so a resend after a
 * reconnect or a reload never doubles. The snapshot in sessionStorage lets
 * a reload resume right after the last entry shown.
 */
import type { Arrival, Connection, InboxEntry, InboxPosition } from './connection.ts';
import * as saved from './saved.ts';
import type { Conversation, Pending, State } from './state.ts';

/** Writes of the snapshot are gathered: a replay of thousands of entries is not thousands of writes. */
const SAVE_DELAY_MS = 100;

/** A fresh `once` key: 16 random characters, unique for any practical purpose. */
export function newOnceKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, '-')
    .replace(/\//g, '_');
}

/** `msg,<text>` reads as the text; another command as its fields. */
export function describe(command: readonly string[]): string {
  return command[0] === 'msg' ? command.slice(1).join(', ') : command.join(', ');
}

export class DirectMessages {
  readonly #state: State;
  readonly #conn: Connection;
  readonly #me: string;
  #timer: number | undefined;
  #forgotten = false;

  constructor(state: State, conn: Connection, me: string) {
    this.#state = state;
    this.#conn = conn;
    this.#me = me;
  }

  /** Puts the stored conversations back; the position to resume from (undefined: read everything retained). */
  restore(): { position: InboxPosition | undefined; outbox: Pending[] } {
    const snapshot = saved.load(this.#me);
    for (const c of snapshot.dms) {
      const convo = this.#state.dm(c.user);
      convo.messages = c.messages;
      convo.unread = c.unread;
    }
    for (const p of snapshot.outbox) this.#state.dm(p.to).pending.push(p);
    return { position: snapshot.position, outbox: snapshot.outbox };
  }

  /**
   * Takes one new entry: a message into its conversation (the id its seq),
   * `friend` for a friend request or answer, undefined for anything else.
   * `received` tells a message from someone else from one's own carbon.
   */
  entry(entry: InboxEntry, arrival: Arrival): { convo: Conversation; received: boolean } | 'friend' | undefined {
    const [kind, peer = '', ...command] = entry.fields;
    this.#scheduleSave();
    if (kind === 'friend') return 'friend';
    // a send to oneself makes an entry and a carbon: the carbon shows it
    if (kind === 'send' && peer.toLowerCase() === this.#me.toLowerCase()) return undefined;
    if (kind !== 'send' && kind !== 'sent') return undefined;
    const received = kind === 'send';
    const convo = this.#state.dm(peer);
    // an entry carries no time: only one that arrives live is known to be from now
    convo.messages.push({ id: entry.seq, time: arrival === 'live' ? Date.now() : 0, user: received ? peer : this.#me, text: describe(command) });
    return { convo, received };
  }

  /** The inbox is read again from seq 1: the shown messages go (the replay brings back every retained one), the pending sends stay. */
  rebuild(): void {
    for (const convo of this.#state.dms.values()) {
      convo.messages = [];
      convo.unread = 0;
    }
    this.#scheduleSave();
  }

  /** Live entries only from now on: what is shown stays, with a note that some messages may be missing. */
  gap(): void {
    for (const convo of this.#state.dms.values()) {
      convo.messages.push({ id: 0, time: Date.now(), user: '', text: 'Some direct messages could not be recovered.', system: true });
    }
    this.#scheduleSave();
  }

  /**
   * Sends a direct message under a new `once` key: shown as pending until
   * answered (its carbon comes before the answer); kept in the snapshot so a
   * reload sends it again with the same key. Rejects on an error reply
   * (the pending message is then gone).
   */
  async send(to: string, text: string): Promise<void> {
    const pending: Pending = { key: newOnceKey(), to, text };
    this.#state.dm(to).pending.push(pending);
    this.save();
    await this.#deliver(pending);
  }

  /** Sends again what a reload interrupted, with the keys it had: the server answers a repeat from its record. */
  resend(outbox: Pending[], failed: (err: unknown) => void): void {
    for (const p of outbox) this.#deliver(p).catch(failed);
  }

  async #deliver(p: Pending): Promise<void> {
    try {
      await this.#conn.requestOnce(p.key, 'send', p.to, 'msg', p.text);
    } finally {
      const convo = this.#state.dm(p.to);
      convo.pending = convo.pending.filter((q) => q !== p);
      this.save();
    }
  }

  /** Writes the snapshot now (position and conversations together). */
  save(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const position = this.#conn.position;
    if (position === undefined || this.#forgotten) return;
    const outbox = [...this.#state.dms.values()].flatMap((c) => c.pending);
    saved.save(this.#me, position, this.#state.dms.values(), outbox);
  }

  /** Logging out: the snapshot goes, and no write brings it back. */
  forget(): void {
    this.#forgotten = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    saved.forget(this.#me);
  }

  #scheduleSave(): void {
    this.#timer ??= window.setTimeout(() => this.save(), SAVE_DELAY_MS);
  }
}
