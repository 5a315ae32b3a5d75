/**
 * What a reload keeps of the direct messages: one snapshot per user in
 * sessionStorage (the tab's lifetime, like its login token): the inbox
 * position, the conversations built from the entries up to it, and the
 * sends not answered yet. The position and the conversations are written
 * together in one setItem, so a reload always resumes right after the last
 * entry the stored conversations hold: nothing is shown twice or skipped,
 * however stale the snapshot is. A new tab is a new device: it reads every
 * retained entry again (`resume,,0`).
 */
import type { InboxPosition } from './connection.ts';
import type { Conversation, Message, Pending } from './state.ts';

const PREFIX = 'textserver-inbox:';
const VERSION = 1;
/** A snapshot beyond the storage quota keeps the newest messages of each conversation. */
const TRIM_TO = [Infinity, 2000, 500, 100, 0];

type Saved = {
  v: number;
  position: InboxPosition;
  dms: { user: string; unread: number; messages: Message[] }[];
  outbox: Pending[];
};

export type Snapshot = { position: InboxPosition | undefined; dms: Conversation[]; outbox: Pending[] };

const keyOf = (user: string) => PREFIX + user.toLowerCase();

export function load(user: string): Snapshot {
  const none: Snapshot = { position: undefined, dms: [], outbox: [] };
  let saved: Saved;
  try {
    const text = sessionStorage.getItem(keyOf(user));
    if (text === null) return none;
    saved = JSON.parse(text) as Saved;
  } catch {
    return none;
  }
  if (saved.v !== VERSION || typeof saved.position?.epoch !== 'string' || !Number.isSafeInteger(saved.position.seq)) return none;
  return {
    position: saved.position,
    dms: saved.dms.map((c) => ({ user: c.user, unread: c.unread, messages: c.messages, pending: [] })),
    outbox: saved.outbox,
  };
}

/** Writes the snapshot; on a full storage, fewer old messages (the position stays right: they were processed). */
export function save(user: string, position: InboxPosition, dms: Iterable<Conversation>, outbox: Pending[]): void {
  const list = [...dms];
  for (const keep of TRIM_TO) {
    const saved: Saved = {
      v: VERSION,
      position,
      dms: list.map((c) => ({ user: c.user, unread: c.unread, messages: keep === 0 ? [] : c.messages.slice(-keep) })),
      outbox,
    };
    try {
      sessionStorage.setItem(keyOf(user), JSON.stringify(saved));
      return;
    } catch {
      // QuotaExceededError: try again with less
    }
  }
}

export function forget(user: string): void {
  sessionStorage.removeItem(keyOf(user));
}
