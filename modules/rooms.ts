/**
 * Group rooms with durable history (MODULES.md, rooms). Membership belongs
 * to the user and lives in this module's own tables; every connection of
 * every member gets the room's pushes. Offers the `rooms` service
 * (`roomsOf`, `membersOf`, `post`) to other modules (presence, kfcr, HTTP).
 */
import { CommandError, defineModule, expectArgs, type CommandContext, type ServerApi, type UserRef } from '../src/core/module-api.ts';
import { RoomStore, type RoomMessage } from './rooms-store.ts';

const ROOM_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_HISTORY = 500;

export type RoomsService = {
  roomsOf(userId: number): string[];
  membersOf(room: string): ReadonlySet<number>;
  isMember(room: string, userId: number): boolean;
  join(user: UserRef, room: string): void;
  leave(user: UserRef, room: string): void;
  /** Stores a message durably, then pushes it to every member's connections. */
  post(room: string, userName: string, text: string): RoomMessage;
  history(room: string, mode: string, numbers: readonly number[]): RoomMessage[];
  /** Creates the room if needed (KFCR's room exists without members). */
  ensure(room: string): void;
};

let store: RoomStore | undefined;
let server: ServerApi | undefined;

function rooms(): RoomStore {
  if (store === undefined) throw new Error('rooms module not initialised');
  return store;
}

export function checkRoom(room: string): void {
  if (!ROOM_NAME.test(room)) throw new CommandError('invalid_room', 'room names are 1 to 64 characters from A-Z a-z 0-9 _ -');
}

function memberOf(ctx: CommandContext, room: string): UserRef {
  const user = ctx.session.requireUser();
  checkRoom(room);
  if (!rooms().isMember(room, user.id)) throw new CommandError('not_in_room', `you are not in ${room}`);
  return user;
}

function push(room: string, fields: readonly string[], extra?: number): void {
  const members = rooms().members(room);
  const audience = extra === undefined || members.has(extra) ? members : [...members, extra];
  server!.hub.pushToUsers(audience, fields);
}

/** A non-negative whole number, or `syntax`. */
function count(text: string): number {
  if (!/^\d{1,15}$/.test(text)) throw new CommandError('syntax', `${JSON.stringify(text)} is not a non-negative whole number`);
  return Number(text);
}

function limit(text: string): number {
  const n = count(text);
  if (n < 1 || n > MAX_HISTORY) throw new CommandError('syntax', `n must be 1 to ${MAX_HISTORY}`);
  return n;
}

const MODES: Record<string, { args: number; parse(a: readonly string[]): number[] }> = {
  last: { args: 1, parse: (a) => [limit(a[0]!)] },
  since: { args: 1, parse: (a) => [count(a[0]!)] },
  after: { args: 1, parse: (a) => [count(a[0]!)] },
  before: { args: 2, parse: (a) => [count(a[0]!), limit(a[1]!)] },
  between: { args: 2, parse: (a) => [count(a[0]!), count(a[1]!)] },
};

const service: RoomsService = {
  roomsOf: (userId) => rooms().roomsOf(userId),
  membersOf: (room) => rooms().members(room),
  isMember: (room, userId) => rooms().isMember(room, userId),
  ensure: (room) => rooms().ensure(room, Date.now()),
  join(user, room) {
    if (rooms().join(room, user.id, Date.now())) push(room, ['room', room, 'joined', user.name]);
  },
  leave(user, room) {
    if (!rooms().isMember(room, user.id)) throw new CommandError('not_in_room', `you are not in ${room}`);
    rooms().leave(room, user.id);
    push(room, ['room', room, 'left', user.name], user.id);
  },
  post(room, userName, text) {
    const message = rooms().append(room, userName, text, Date.now());
    push(room, ['room', room, 'msg', String(message.id), String(message.time), message.user, message.text]);
    return message;
  },
  history: (room, mode, numbers) => rooms().history(room, mode, numbers, MAX_HISTORY),
};

export default defineModule({
  description: 'group rooms with durable history',
  usage: {
    join: 'join,<room> -> ok',
    leave: 'leave,<room> -> ok',
    say: 'say,<room>,<text> -> said,<room>,<id>,<time>',
    rooms: 'rooms -> rooms[,<room>...]',
    members: 'members,<room> -> members,<room>[,<user>...]',
    history: 'history,<room>,last,<n> | since,<time> | after,<id> | before,<id>,<n> | between,<from>,<to> -> history,<room>,<count>[,<id>,<time>,<user>,<text>...]',
  },
  pushes: ['room'],
  errors: {
    invalid_room: { fatal: false, info: 'room names are 1 to 64 characters from A-Z a-z 0-9 _ -' },
    not_in_room: { fatal: false, info: 'you are not a member of that room', status: 403 },
  },
  migrations: RoomStore.migrations,
  init(api) {
    server = api;
    store = new RoomStore(api.db);
    api.services.provide('rooms', service);
  },
  dispose() {
    store = undefined;
  },
  commands: {
    join(ctx, args) {
      const user = ctx.session.requireUser();
      expectArgs(args, 1, 'join,<room>');
      checkRoom(args[0]!);
      service.join(user, args[0]!);
    },
    leave(ctx, args) {
      const user = ctx.session.requireUser();
      expectArgs(args, 1, 'leave,<room>');
      checkRoom(args[0]!);
      service.leave(user, args[0]!);
    },
    say(ctx, args) {
      ctx.session.requireUser();
      expectArgs(args, 2, 'say,<room>,<text>');
      const [room, text] = args as [string, string];
      const user = memberOf(ctx, room);
      const m = service.post(room, user.name, text);
      return ['said', room, String(m.id), String(m.time)];
    },
    rooms(ctx, args) {
      const user = ctx.session.requireUser();
      expectArgs(args, 0, 'rooms');
      return ['rooms', ...rooms().roomsOf(user.id).sort()];
    },
    members(ctx, args) {
      ctx.session.requireUser();
      expectArgs(args, 1, 'members,<room>');
      memberOf(ctx, args[0]!);
      const names = [...rooms().members(args[0]!)].map((id) => ctx.server.users.byId(id)?.name ?? `#${id}`);
      return ['members', args[0]!, ...names.sort()];
    },
    history(ctx, args) {
      ctx.session.requireUser();
      const mode = MODES[args[1] ?? ''];
      if (args.length < 2 || mode === undefined || args.length !== 2 + mode.args) {
        throw new CommandError('syntax', 'usage: history,<room>,last,<n> | since,<time> | after,<id> | before,<id>,<n> | between,<from>,<to>');
      }
      const numbers = mode.parse(args.slice(2));
      const room = args[0]!;
      memberOf(ctx, room);
      const messages = service.history(room, args[1]!, numbers);
      const reply = ['history', room, String(messages.length)];
      for (const m of messages) reply.push(String(m.id), String(m.time), m.user, m.text);
      return reply;
    },
  },
});
