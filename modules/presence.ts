/**
 * Presence and typing (MODULES.md, presence). Online means at least one
 * logged-in connection; friends (from the `friends` service) and room
 * co-members (from the `rooms` service) hear of each change once. Typing
 * stops by itself after `--typing-timeout` seconds or when the user goes offline,
 * and ends quietly when the user says something in the room (a filter on `say`).
 */
import type { StatementSync } from 'node:sqlite';
import { CommandError, defineModule, expectArgs, type CommandContext, type ServerApi, type UserRef } from '../src/core/module-api.ts';
import type { RoomsService } from './rooms.ts';
import type { FriendsService } from './friends.ts';

let server: ServerApi | undefined;
let lastSeen: { get: StatementSync; set: StatementSync } | undefined;
/** `${userId} ${room}` -> the auto-stop timer of a user typing in a room */
const typing = new Map<string, { user: UserRef; room: string; timer: NodeJS.Timeout }>();

const roomsService = () => server?.services.get<RoomsService>('rooms');

/** Everyone who should hear about `user`: friends and co-members, never the user. */
function audience(user: UserRef): Set<number> {
  const ids = new Set<number>(server?.services.get<FriendsService>('friends')?.friendsOf(user.id) ?? []);
  const rooms = roomsService();
  for (const room of rooms?.roomsOf(user.id) ?? []) for (const id of rooms!.membersOf(room)) ids.add(id);
  ids.delete(user.id);
  return ids;
}

function stopTyping(key: string): void {
  const t = typing.get(key);
  if (t === undefined) return;
  clearTimeout(t.timer);
  typing.delete(key);
  pushTyping(t.user, t.room, 'stop');
}

/**
 * A `say` that will be posted ends the sayer's typing in that room without a
 * `stop` push (the members see the message instead), so their next `start` is
 * pushed again. Runs before the rooms handler, hence the checks that make the
 * say succeed: well-formed and from a member.
 */
function endTypingOnSay(ctx: CommandContext, args: string[]): void {
  const user = ctx.session.user;
  if (user === null || args.length !== 2) return;
  const key = `${user.id} ${args[0]!}`;
  const t = typing.get(key);
  if (t === undefined || roomsService()?.isMember(t.room, user.id) !== true) return;
  clearTimeout(t.timer);
  typing.delete(key);
}

function pushTyping(user: UserRef, room: string, state: 'start' | 'stop'): void {
  const members = roomsService()?.membersOf(room);
  if (members === undefined) return;
  const others = [...members].filter((id) => id !== user.id);
  server!.hub.pushToUsers(others, ['room', room, 'typing', user.name, state]);
}

export default defineModule({
  description: 'presence and typing indicators',
  usage: {
    presence: 'presence,<user> -> presence,<user>,online | presence,<user>,offline,<last seen ms or 0>',
    typing: 'typing,<room>,start|stop -> ok',
  },
  pushes: ['presence', 'room'],
  repliesLikePushes: ['presence'],
  options: {
    'typing-timeout': { type: 'number', default: 10, min: 0.01, description: 'seconds after which typing stops by itself' },
  },
  migrations: ['CREATE TABLE presence_last_seen (user_id INTEGER PRIMARY KEY, last_seen INTEGER NOT NULL);'],
  init(api) {
    server = api;
    lastSeen = {
      get: api.db.prepare('SELECT last_seen AS t FROM presence_last_seen WHERE user_id = ?'),
      set: api.db.prepare('INSERT INTO presence_last_seen (user_id, last_seen) VALUES (?, ?) ON CONFLICT(user_id) DO UPDATE SET last_seen = excluded.last_seen'),
    };
  },
  dispose() {
    for (const t of typing.values()) clearTimeout(t.timer);
    typing.clear();
  },
  hooks: {
    online(user) {
      server!.hub.pushToUsers(audience(user), ['presence', user.name, 'online']);
    },
    offline(user, time) {
      for (const [key, t] of typing) if (t.user.id === user.id) stopTyping(key);
      lastSeen!.set.run(user.id, time);
      server!.hub.pushToUsers(audience(user), ['presence', user.name, 'offline']);
    },
  },
  filters: { say: endTypingOnSay },
  commands: {
    presence(ctx, args) {
      ctx.session.requireUser();
      expectArgs(args, 1, 'presence,<user>');
      const user = ctx.server.users.find(args[0]!);
      if (user === null) throw new CommandError('user_not_found', `no user ${args[0]}`);
      if (ctx.server.hub.isOnline(user.id)) return ['presence', user.name, 'online'];
      const row = lastSeen!.get.get(user.id) as { t: number } | undefined;
      return ['presence', user.name, 'offline', String(row?.t ?? 0)];
    },
    typing(ctx, args) {
      const user = ctx.session.requireUser();
      expectArgs(args, 2, 'typing,<room>,start|stop');
      const [room, state] = args as [string, string];
      if (state !== 'start' && state !== 'stop') throw new CommandError('syntax', 'usage: typing,<room>,start|stop');
      if (roomsService()?.isMember(room, user.id) !== true) throw new CommandError('not_in_room', `you are not in ${room}`);
      const key = `${user.id} ${room}`;
      const current = typing.get(key);
      if (state === 'stop') return stopTyping(key);
      const seconds = ctx.server.options['typing-timeout'] as number;
      const timer = setTimeout(() => stopTyping(key), seconds * 1000);
      timer.unref();
      if (current !== undefined) {
        clearTimeout(current.timer);
        current.timer = timer;
        return;
      }
      typing.set(key, { user, room, timer });
      pushTyping(user, room, 'start');
    },
  },
});
