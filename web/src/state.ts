/** What the page knows: rooms with their messages, conversations, friends, presence. */
import type { HistoryMessage } from '../../modules/rooms-history.ts';

export { parseHistory } from '../../modules/rooms-history.ts';

export type Message = HistoryMessage & { system?: boolean };

export type Room = {
  name: string;
  messages: Message[];
  members: Set<string>;
  typing: Set<string>;
  /** No older messages exist (paging backwards stops). */
  complete: boolean;
  /** The newest message id seen before the connection dropped, until the catch-up after the reconnect is done. */
  catchUpAfter?: number;
  unread: number;
};

/** A direct message sent but not answered yet (its `once` key resends it after a reconnect or a reload). */
export type Pending = { key: string; to: string; text: string };

/**
 * A direct-message conversation: `messages` only from inbox entries (the
 * received ones and the carbons of what this user sent, from any device),
 * each message's id its seq; `pending` the sends still waiting for a reply,
 * shown after them until the carbon takes their place.
 */
export type Conversation = { user: string; messages: Message[]; unread: number; pending: Pending[] };

export type View = { kind: 'room' | 'dm'; name: string } | undefined;

export class State {
  me: string | undefined;
  readonly rooms = new Map<string, Room>();
  readonly dms = new Map<string, Conversation>();
  friends: string[] = [];
  requests: string[] = [];
  readonly online = new Map<string, boolean>();
  view: View;

  room(name: string): Room {
    let r = this.rooms.get(name);
    if (r === undefined) {
      r = { name, messages: [], members: new Set(), typing: new Set(), complete: false, unread: 0 };
      this.rooms.set(name, r);
    }
    return r;
  }

  dm(user: string): Conversation {
    const key = user.toLowerCase();
    let c = this.dms.get(key);
    if (c === undefined) {
      c = { user, messages: [], unread: 0, pending: [] };
      this.dms.set(key, c);
    }
    return c;
  }

  /** Adds messages in id order, skipping ones already there (live pushes and catch-up can overlap). */
  static merge(room: Room, incoming: Message[]): void {
    const have = new Set(room.messages.filter((m) => !m.system).map((m) => m.id));
    const fresh = incoming.filter((m) => !have.has(m.id));
    if (fresh.length === 0) return;
    room.messages.push(...fresh);
    room.messages.sort((a, b) => a.time - b.time || a.id - b.id);
  }

  static lastId(room: Room): number {
    let last = 0;
    for (const m of room.messages) if (!m.system && m.id > last) last = m.id;
    return last;
  }

  static firstId(room: Room): number | undefined {
    const real = room.messages.filter((m) => !m.system);
    return real.length === 0 ? undefined : Math.min(...real.map((m) => m.id));
  }
}
