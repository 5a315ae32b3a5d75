/**
 * Group rooms with durable history (MODULES.md, rooms). Membership belongs
 * to the user and lives in this module's own tables; every connection of
 * every member gets the room's pushes. Offers the `rooms` service
 * (`roomsOf`, `membersOf`, `post`) to other modules (presence, kfcr, HTTP).
 */
import { CommandError, defineModule, expectArgs, type ClusterApi, type CommandContext, type ServerApi, type SessionApi, type UserRef } from '../src/core/module-api.ts';
import { roomChannel } from '../src/bus/bus.ts';
import { bulkDone, bulkTurn } from '../src/core/bulk-turns.ts';
import { InOrder } from './in-order.ts';
import { RoomOrder } from './room-order.ts';
import { byUserName } from './user-order.ts';
import { SerialBatches } from './serial-batches.ts';
import { ROOM_MIGRATIONS, RoomStore, type HistoryMode, type HistoryPage, type RoomMessage } from './rooms-store.ts';

const ROOM_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_HISTORY = 500;
/** Messages of one room committed together at most (the rest wait for the next commit). */
const MAX_BATCH = 256;
/** In a cluster: how long a room message waits here for the one before it, said on another node (room-order.ts). */
const ORDER_HOLD_MS = 300;

export type RoomsService = {
  roomsOf(userId: number): string[];
  membersOf(room: string): ReadonlySet<number>;
  isMember(room: string, userId: number): boolean;
  join(user: UserRef, room: string): Promise<void>;
  leave(user: UserRef, room: string): Promise<void>;
  /** Stores a message durably, then pushes it to every member's connections; `session`'s reply comes after the push to it. */
  post(room: string, userName: string, text: string, session?: SessionApi): Promise<RoomMessage>;
  /** A page bounded in rows (500) and bytes (`--history-max-bytes`). */
  history(room: string, mode: HistoryMode, numbers: readonly number[]): Promise<HistoryPage>;
  /** Creates the room if needed (KFCR's room exists without members). */
  ensure(room: string): Promise<void>;
  /** Pushes to every member's connections (on every node), but `except`'s (typing). */
  broadcast(room: string, fields: readonly string[], except?: number): void;
};

/** Every node hears every join and leave here: each keeps the whole membership index (presence audiences, `members`, checks). */
const MEMBERSHIP_CHANNEL = 'ts:rooms';

export function checkRoom(room: string): void {
  if (!ROOM_NAME.test(room)) throw new CommandError('invalid_room', 'room names are 1 to 64 characters from A-Z a-z 0-9 _ -');
}

/** A non-negative whole number, or `syntax`. */
function count(text: string): number {
  if (!/^\d+$/.test(text)) throw new CommandError('syntax', `${JSON.stringify(text)} is not a non-negative whole number`);
  // MODULES.md: only non-numeric or negative numbers are syntax; one past every id and time is still a number
  return Math.min(Number(text), Number.MAX_SAFE_INTEGER);
}

function limit(text: string): number {
  const n = count(text);
  if (n < 1 || n > MAX_HISTORY) throw new CommandError('syntax', `n must be 1 to ${MAX_HISTORY}`);
  return n;
}

const MODES: Record<HistoryMode, { args: number; parse(a: readonly string[]): number[] }> = {
  last: { args: 1, parse: (a) => [limit(a[0]!)] },
  since: { args: 1, parse: (a) => [count(a[0]!)] },
  after: { args: 1, parse: (a) => [count(a[0]!)] },
  before: { args: 2, parse: (a) => [count(a[0]!), limit(a[1]!)] },
  between: { args: 2, parse: (a) => [count(a[0]!), count(a[1]!)] },
};

function roomsService(server: ServerApi, store: RoomStore, maxBytes: number, order: RoomOrder, maxRooms: number): RoomsService {
  const inOrder = new InOrder<string>();
  const cluster = server.hub.cluster;
  /** Each message's push here, in the room's id order (a cluster's): the say's reply waits for it (pushes before replies). */
  const pushed = new WeakMap<RoomMessage, Promise<void>>();
  /** This node's connections of the members (and of `extra`, who just left); the other nodes push to theirs from what they hear. */
  const pushHere = (room: string, fields: readonly string[], extra?: number, except?: number) => {
    const members = store.members(room);
    let audience: Iterable<number> = extra === undefined || members.has(extra) ? members : [...members, extra];
    if (except !== undefined) audience = [...audience].filter((id) => id !== except);
    server.hub.pushLocal(audience, fields);
  };
  const membership = (room: string, user: UserRef, joined: boolean) =>
    cluster?.publish(MEMBERSHIP_CHANNEL, 'member', { r: room, u: user.id, n: user.name, j: joined ? 1 : 0 });
  const broadcast = (room: string, fields: readonly string[], except?: number) => {
    pushHere(room, fields, undefined, except);
    cluster?.publish(roomChannel(room), 'room', except === undefined ? { f: fields } : { f: fields, x: except });
  };
  // a room's says commit one batch at a time, so ids are taken in commit order; the pushes
  // then go out in that order, placed among the room's joins and leaves by InOrder
  /**
   * Work, then its effect in the room's order. Under `once` the work joins
   * the request's transaction, which holds the store (all of it on SQLite)
   * until the command ends: waiting there for earlier work that needs the
   * store would never end, so the work runs at once and its effect waits
   * for the commit instead (on PostgreSQL the room lock still orders ids).
   */
  const ordered = <T>(room: string, work: () => Promise<T>, effect: (result: T) => void): Promise<T> =>
    server.store.inTransaction()
      ? work().then((result) => {
          server.store.afterCommit(() => effect(result));
          return result;
        })
      : inOrder.run(room, work, effect);
  const appendAndPush = (room: string, items: { user: string; text: string }[]) =>
    ordered(
      room,
      () => store.append(room, items, Date.now()),
      (stored) => {
        for (const m of stored) {
          const fields = ['room', room, 'msg', String(m.id), String(m.time), m.user, m.text];
          if (m.prev === undefined) {
            broadcast(room, fields);
            continue;
          }
          // the audience of the moment it was said, should it wait here for the one before it
          const members = [...store.members(room)];
          pushed.set(
            m,
            order.deliver(room, m.id, m.prev, () => server.hub.pushLocal(members, fields)),
          );
          cluster?.publish(roomChannel(room), 'room', { f: fields, p: m.prev });
        }
      },
    );
  const says = new SerialBatches<string, { user: string; text: string }, RoomMessage>(MAX_BATCH, appendAndPush);
  return {
    broadcast,
    roomsOf: (userId) => store.roomsOf(userId),
    membersOf: (room) => store.members(room),
    isMember: (room, userId) => store.isMember(room, userId),
    ensure: async (room) => void (await store.ensure(room, Date.now())),
    async join(user, room) {
      if (store.isMember(room, user.id)) return;
      // every membership (and room) is held in memory, and each one is read at the member's every login and logout
      // (presence): one user joining new rooms at its request rate grew both without bound (11,600 rooms in 15 s)
      if (store.roomsOf(user.id).length >= maxRooms)
        throw new CommandError('too_many_rooms', `you are in ${maxRooms} rooms, the most allowed (--max-rooms-per-user): leave one first`);
      let joined = false;
      await ordered(
        room,
        () => store.join(room, user.id, Date.now()),
        () => {
          if (store.isMember(room, user.id)) return; // a concurrent join of the same user came first
          joined = true;
          store.index(room, user.id);
          pushHere(room, ['room', room, 'joined', user.name]);
          membership(room, user, true);
        },
      );
      // the room's pushes reach this node before the reply (CLUSTER.md rule 5)
      if (joined) await cluster?.follow(user.id, roomChannel(room));
    },
    async leave(user, room) {
      if (!store.isMember(room, user.id)) throw new CommandError('not_in_room', `you are not in ${room}`);
      const removed = await ordered(
        room,
        () => store.leave(room, user.id),
        (removed) => {
          if (!removed) return; // another connection of the user left first, and pushed it
          store.unindex(room, user.id);
          cluster?.unfollow(user.id, roomChannel(room));
          pushHere(room, ['room', room, 'left', user.name], user.id);
          membership(room, user, false);
        },
      );
      if (!removed) throw new CommandError('not_in_room', `you are not in ${room}`);
    },
    // a batch holds several users' says, so one under `once` (whose transaction holds the store) is written alone, in it
    async post(room, userName, text, session) {
      if (!server.store.inTransaction()) {
        const m = await says.add(room, { user: userName, text });
        await pushed.get(m);
        return m;
      }
      const m = (await appendAndPush(room, [{ user: userName, text }]))[0]!;
      // its push goes out after the commit (this command's caller waits for that), and in a cluster it may then
      // wait for the room's message before it, said on another node: the reply waits for it there
      session?.delayReply(new Promise<void>((resolve) => server.store.afterCommit(() => void (pushed.get(m) ?? Promise.resolve()).then(resolve))));
      return m;
    },
    async history(room, mode, numbers) {
      // a page of big messages is tens of milliseconds of the one thread, read and encoded: thirty readers at once
      // held every other client for seconds, so pages take turns with replays and the like (bulk-turns.ts)
      const claim = await bulkTurn(maxBytes);
      let bytes = 0;
      try {
        const page = await store.history(room, mode, numbers, MAX_HISTORY, maxBytes);
        // read now, and encoded into its reply in the same turn
        for (const m of page.messages) bytes += 2 * m.text.length;
        return page;
      } finally {
        bulkDone(claim, bytes);
      }
    },
  };
}

/**
 * In a cluster: every node keeps the whole membership index from the joins
 * and leaves it hears (re-read from the store after a resubscription, when
 * some may have been lost), holds the channels of the rooms of its users,
 * and pushes to its own connections what the rooms' other nodes publish.
 * Returns what undoes it (a reload sets the module up again).
 */
async function joinCluster(server: ServerApi, cluster: ClusterApi, store: RoomStore, order: RoomOrder): Promise<() => void> {
  const here = (userId: number) => server.hub.sessionsOf(userId).length > 0;
  const offs = [
    cluster.follows((userId) => store.roomsOf(userId).map(roomChannel)),
    cluster.on('member', (_channel, f) => {
      const room = f.r;
      const userId = f.u;
      const name = f.n;
      if (typeof room !== 'string' || typeof userId !== 'number' || typeof name !== 'string') return;
      if (f.j === 1) {
        if (store.isMember(room, userId)) return;
        store.index(room, userId);
        // the joiner's connections here see their join once the room's pushes reach this node
        const members = [...store.members(room)];
        void cluster.follow(userId, roomChannel(room)).then(() => server.hub.pushLocal(members, ['room', room, 'joined', name]));
      } else {
        if (!store.isMember(room, userId)) return;
        store.unindex(room, userId);
        cluster.unfollow(userId, roomChannel(room));
        server.hub.pushLocal([...store.members(room), userId], ['room', room, 'left', name]);
      }
    }),
    cluster.on('room', (channel, f) => {
      if (!channel.startsWith('ts:r:') || !Array.isArray(f.f)) return;
      const room = channel.slice(5);
      const members = store.members(room);
      const fields = f.f as string[];
      const msgId = Number(fields[3]);
      // a message: in the room's id order here (room-order.ts)
      if (fields[2] === 'msg' && typeof f.p === 'number' && Number.isSafeInteger(msgId)) {
        const audience = [...members];
        void order.deliver(room, msgId, f.p, () => server.hub.pushLocal(audience, fields));
        return;
      }
      server.hub.pushLocal(typeof f.x === 'number' ? [...members].filter((id) => id !== f.x) : members, fields);
    }),
    cluster.onResubscribed(() => {
      store.reload().then(
        () => {
          for (const userId of store.users()) if (here(userId)) for (const room of store.roomsOf(userId)) void cluster.follow(userId, roomChannel(room));
        },
        () => {}, // the store is away: the next resubscription tries again
      );
    }),
  ];
  await cluster.subscribe(MEMBERSHIP_CHANNEL);
  return () => {
    for (const off of offs) off();
    cluster.unsubscribe(MEMBERSHIP_CHANNEL);
  };
}

export default defineModule({
  description: 'group rooms with durable history',
  usage: {
    join: 'join,<room> -> ok',
    leave: 'leave,<room> -> ok',
    say: 'say,<room>,<text> -> said,<room>,<id>,<time>',
    rooms: 'rooms -> rooms[,<room>...]',
    members: 'members,<room> -> members,<room>[,<user>...]',
    history:
      'history,<room>,last,<n> | since,<time> | after,<id> | before,<id>,<n> | between,<from>,<to> -> history,<room>,<count>[,<id>,<time>,<user>,<text>...][,more]',
  },
  pushes: ['room'],
  options: {
    'history-max-bytes': {
      type: 'number',
      default: 1024 * 1024,
      min: 1,
      description: 'bytes of messages in one history page (a page stops early past it and ends with the field more)',
    },
    'max-rooms-per-user': {
      type: 'number',
      default: 1000,
      min: 1,
      description: 'rooms one user may be a member of at once (join answers too_many_rooms past it)',
    },
  },
  errors: {
    invalid_room: { fatal: false, info: 'room names are 1 to 64 characters from A-Z a-z 0-9 _ -' },
    not_in_room: { fatal: false, info: 'you are not a member of that room', status: 403 },
    too_many_rooms: { fatal: false, info: 'you are in as many rooms as allowed: leave one first', status: 409 },
  },
  migrations: ROOM_MIGRATIONS,
  async setup(ctx) {
    const store = await RoomStore.open(ctx.server.store, ctx.server.hub.cluster !== undefined);
    const order = new RoomOrder(ORDER_HOLD_MS);
    const service = roomsService(ctx.server, store, ctx.options['history-max-bytes'], order, ctx.options['max-rooms-per-user']);
    const cluster = ctx.server.hub.cluster;
    const leftCluster = cluster === undefined ? () => {} : await joinCluster(ctx.server, cluster, store, order);
    const leaveCluster = () => {
      leftCluster();
      order.clear();
    };

    const memberOf = (c: CommandContext, room: string): UserRef => {
      const user = c.session.requireUser();
      checkRoom(room);
      if (!store.isMember(room, user.id)) throw new CommandError('not_in_room', `you are not in ${room}`);
      return user;
    };

    return {
      dispose: leaveCluster,
      services: { rooms: service },
      commands: {
        async join(c, args) {
          const user = c.session.requireUser();
          expectArgs(args, 1, 'join,<room>');
          checkRoom(args[0]!);
          await service.join(user, args[0]!);
        },
        async leave(c, args) {
          const user = c.session.requireUser();
          expectArgs(args, 1, 'leave,<room>');
          checkRoom(args[0]!);
          await service.leave(user, args[0]!);
        },
        async say(c, args) {
          c.session.requireUser();
          expectArgs(args, 2, 'say,<room>,<text>');
          const [room, text] = args as [string, string];
          const user = memberOf(c, room);
          const m = await service.post(room, user.name, text, c.session);
          return ['said', room, String(m.id), String(m.time)];
        },
        rooms(c, args) {
          const user = c.session.requireUser();
          expectArgs(args, 0, 'rooms');
          return ['rooms', ...store.roomsOf(user.id).sort()];
        },
        async members(c, args) {
          c.session.requireUser();
          expectArgs(args, 1, 'members,<room>');
          memberOf(c, args[0]!);
          const names = await Promise.all([...store.members(args[0]!)].map(async (id) => (await c.server.users.byId(id))?.name ?? `#${id}`));
          return ['members', args[0]!, ...names.sort(byUserName)];
        },
        async history(c, args) {
          c.session.requireUser();
          const mode = MODES[(args[1] ?? '') as HistoryMode] as (typeof MODES)[HistoryMode] | undefined;
          if (args.length < 2 || mode === undefined || args.length !== 2 + mode.args) {
            throw new CommandError('syntax', 'usage: history,<room>,last,<n> | since,<time> | after,<id> | before,<id>,<n> | between,<from>,<to>');
          }
          const numbers = mode.parse(args.slice(2));
          const room = args[0]!;
          memberOf(c, room);
          const page = await service.history(room, args[1] as HistoryMode, numbers);
          const reply = ['history', room, String(page.messages.length)];
          for (const m of page.messages) reply.push(String(m.id), String(m.time), m.user, m.text);
          if (page.more) reply.push('more');
          return reply;
        },
      },
    };
  },
});
