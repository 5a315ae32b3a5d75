/** The rooms module's tables, with an in-memory membership index for fan-out. */
import type { StatementSync } from 'node:sqlite';
import type { ModuleDb } from '../src/core/module-api.ts';

export type RoomMessage = { id: number; time: number; user: string; text: string };

const NOBODY: ReadonlySet<number> = new Set();

export class RoomStore {
  static readonly migrations = [
    `CREATE TABLE rooms (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL);
     CREATE TABLE room_members (
       room_id INTEGER NOT NULL REFERENCES rooms(id),
       user_id INTEGER NOT NULL,
       joined_at INTEGER NOT NULL,
       PRIMARY KEY (room_id, user_id)
     ) WITHOUT ROWID;
     CREATE TABLE room_messages (
       id INTEGER PRIMARY KEY AUTOINCREMENT,
       room_id INTEGER NOT NULL REFERENCES rooms(id),
       time INTEGER NOT NULL,
       user TEXT NOT NULL,
       text TEXT NOT NULL
     );
     CREATE INDEX room_messages_by_room ON room_messages(room_id, id);
     CREATE INDEX room_messages_by_time ON room_messages(room_id, time);`,
  ];

  readonly #db: ModuleDb;
  readonly #ids = new Map<string, number>();
  readonly #members = new Map<string, Set<number>>();
  readonly #byUser = new Map<number, Set<string>>();
  readonly #q: Record<'room' | 'join' | 'leave' | 'append' | 'last' | 'since' | 'after' | 'before' | 'between', StatementSync>;
  #lastTime = 0;

  constructor(db: ModuleDb) {
    this.#db = db;
    for (const r of db.prepare('SELECT id, name FROM rooms').all() as { id: number; name: string }[]) this.#ids.set(r.name, Number(r.id));
    for (const m of db.prepare('SELECT r.name AS room, m.user_id AS user FROM room_members m JOIN rooms r ON r.id = m.room_id').all() as { room: string; user: number }[]) {
      this.#index(m.room, Number(m.user));
    }
    const last = db.prepare('SELECT max(time) AS t FROM room_messages').get() as { t: number | null };
    this.#lastTime = Number(last.t ?? 0);
    const cols = 'id, time, user, text';
    this.#q = {
      room: db.prepare('INSERT INTO rooms (name, created_at) VALUES (?, ?) RETURNING id'),
      join: db.prepare('INSERT INTO room_members (room_id, user_id, joined_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING'),
      leave: db.prepare('DELETE FROM room_members WHERE room_id = ? AND user_id = ?'),
      append: db.prepare('INSERT INTO room_messages (room_id, time, user, text) VALUES (?, ?, ?, ?) RETURNING id'),
      last: db.prepare(`SELECT ${cols} FROM room_messages WHERE room_id = ? ORDER BY id DESC LIMIT ?`),
      since: db.prepare(`SELECT ${cols} FROM room_messages WHERE room_id = ? AND time >= ? ORDER BY id LIMIT ?`),
      after: db.prepare(`SELECT ${cols} FROM room_messages WHERE room_id = ? AND id > ? ORDER BY id LIMIT ?`),
      before: db.prepare(`SELECT ${cols} FROM room_messages WHERE room_id = ? AND id < ? ORDER BY id DESC LIMIT ?`),
      between: db.prepare(`SELECT ${cols} FROM room_messages WHERE room_id = ? AND time >= ? AND time < ? ORDER BY id LIMIT ?`),
    };
  }

  ensure(room: string, now: number): number {
    let id = this.#ids.get(room);
    if (id === undefined) {
      id = Number((this.#q.room.get(room, now) as { id: number }).id);
      this.#ids.set(room, id);
    }
    return id;
  }

  members(room: string): ReadonlySet<number> {
    return this.#members.get(room) ?? NOBODY;
  }

  isMember(room: string, userId: number): boolean {
    return this.#members.get(room)?.has(userId) === true;
  }

  roomsOf(userId: number): string[] {
    return [...(this.#byUser.get(userId) ?? [])];
  }

  /** True when the user was not a member before. */
  join(room: string, userId: number, now: number): boolean {
    if (this.isMember(room, userId)) return false;
    this.#db.transaction(() => this.#q.join.run(this.ensure(room, now), userId, now));
    this.#index(room, userId);
    return true;
  }

  leave(room: string, userId: number): void {
    const id = this.#ids.get(room);
    if (id === undefined) return;
    this.#q.leave.run(id, userId);
    this.#members.get(room)?.delete(userId);
    this.#byUser.get(userId)?.delete(room);
  }

  /** Committed before it returns; times never go backwards, so id order is time order. */
  append(room: string, user: string, text: string, now: number): RoomMessage {
    const time = (this.#lastTime = Math.max(now, this.#lastTime));
    const id = Number((this.#q.append.get(this.ensure(room, now), time, user, text) as { id: number }).id);
    return { id, time, user, text };
  }

  history(room: string, mode: string, n: readonly number[], max: number): RoomMessage[] {
    const id = this.#ids.get(room);
    if (id === undefined) return [];
    const rows = (() => {
      switch (mode) {
        case 'last':
          return this.#q.last.all(id, n[0]!).reverse();
        case 'since':
          return this.#q.since.all(id, n[0]!, max);
        case 'after':
          return this.#q.after.all(id, n[0]!, max);
        case 'before':
          return this.#q.before.all(id, n[0]!, n[1]!).reverse();
        case 'between':
          return this.#q.between.all(id, n[0]!, n[1]!, max);
        default:
          return [];
      }
    })() as RoomMessage[];
    return rows.map((r) => ({ id: Number(r.id), time: Number(r.time), user: r.user, text: r.text }));
  }

  #index(room: string, userId: number): void {
    let set = this.#members.get(room);
    if (set === undefined) this.#members.set(room, (set = new Set()));
    set.add(userId);
    let rooms = this.#byUser.get(userId);
    if (rooms === undefined) this.#byUser.set(userId, (rooms = new Set()));
    rooms.add(room);
  }
}
