/**
 * Presence and typing (MODULES.md, presence). Online means at least one
 * logged-in connection; friends (from the `friends` service) and room
 * co-members (from the `rooms` service) hear of each change once. Typing
 * stops by itself after `--typing-timeout` seconds or when the user goes offline.
 *
 * In a cluster a user's typing in a room is one state for every node
 * (MODULES.md: a repeated `start` only renews the timer, a `say` ends it
 * without a `stop`, whichever node each comes through): the node that took
 * the latest `start` owns the timer and pushes the auto-stop; the others
 * keep a passive copy, told by a `typing` message on the room's channel
 * (which every node with a member connected holds, so every node the typer
 * can type or say from). A copy the owner never ends (its node was killed)
 * pushes the `stop` to its own node's members when its fallback timer fires.
 */
import type { Kysely } from 'kysely';
import { CommandError, defineModule, expectArgs, type Migration, type UserRef } from '../src/core/module-api.ts';
import { checkRoom, type RoomsService } from './rooms.ts';
import type { FriendsService } from './friends.ts';
import { InOrder } from './in-order.ts';
import { roomChannel } from '../src/bus/bus.ts';

type Tables = { presence_last_seen: { user_id: number; last_seen: number } };

/** A user typing in a room; `owner`: this node pushes its auto-stop (in a cluster the other nodes hold passive copies). */
type Typing = { user: UserRef; room: string; timer: NodeJS.Timeout; owner: boolean };
/** Cluster message kind sharing typing state: `s` is `start` (or renewed) or `end` (stopped, said, gone). */
const TYPING_STATE = 'typing';
/**
 * A passive copy outlives the owner's timer a little, so it never ends before
 * the owner's `stop` push does; when it ends by itself all the same (the owner
 * node died without a word), it pushes the `stop` to this node's members.
 */
const PASSIVE_GRACE_MS = 2000;

const MIGRATIONS: readonly Migration[] = [
  async ({ db }) => {
    await db.schema
      .createTable('presence_last_seen')
      .addColumn('user_id', 'bigint', (c) => c.primaryKey())
      .addColumn('last_seen', 'bigint', (c) => c.notNull())
      .execute();
  },
];

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
  migrations: MIGRATIONS,
  setup(ctx) {
    const { server, log } = ctx;
    const db = () => server.store.db as Kysely<Tables>;
    const timeoutMs = ctx.options['typing-timeout'] * 1000;
    /** `${userId} ${room}` -> the auto-stop timer of a user typing in a room */
    const typing = new Map<string, Typing>();
    const cluster = server.hub.cluster;
    /** Tells the other nodes (a no-op for a server alone). */
    const share = (user: UserRef, room: string, s: 'start' | 'end') =>
      cluster?.publish(roomChannel(room), TYPING_STATE, { r: room, u: user.id, n: user.name, s });
    const rooms = () => server.services.get<RoomsService>('rooms');

    /**
     * Everyone who should hear about `user`: friends and co-members, never the
     * user. Co-members as of the change (read before the friends look-up
     * yields): someone who joins a room later does not hear of it.
     */
    const audience = async (user: UserRef): Promise<Set<number>> => {
      // co-members as of the change itself (before any await): a join that follows does not hear of it
      const ids = new Set<number>();
      const r = rooms();
      for (const room of r?.roomsOf(user.id) ?? []) for (const id of r!.membersOf(room)) ids.add(id);
      for (const id of (await server.services.get<FriendsService>('friends')?.friendsOf(user.id)) ?? []) ids.add(id);
      ids.delete(user.id);
      return ids;
    };
    /**
     * Each change looks up its audience at once, but a user's changes are pushed in the
     * order they happened: a quick offline's look-up may finish before the online's
     * before it, and friends must not be left seeing online last.
     */
    const changes = new InOrder<number>();
    const announce = (user: UserRef, state: 'online' | 'offline', after?: Promise<unknown>) =>
      changes
        .run(
          user.id,
          // `after` holds this push back (still in its place among the user's changes)
          () => Promise.all([audience(user), after]).then(([ids]) => ids),
          // every node hears each change (in a cluster too) and tells its own connections
          (ids) => server.hub.pushLocal(ids, ['presence', user.name, state]),
        )
        .catch((err: unknown) => log.warn({ err: (err as Error).message, user: user.name }, 'presence not announced'));
    const pushTyping = (user: UserRef, room: string, state: 'start' | 'stop') => {
      rooms()?.broadcast(room, ['room', room, 'typing', user.name, state], user.id);
    };
    /** Ends a typing state; `push`: with a `stop` push to the members (and the other nodes told). */
    const endTyping = (key: string, push: boolean) => {
      const t = typing.get(key);
      if (t === undefined) return;
      clearTimeout(t.timer);
      typing.delete(key);
      if (!push) return;
      share(t.user, t.room, 'end');
      pushTyping(t.user, t.room, 'stop');
    };
    const stopTyping = (key: string) => endTyping(key, true);
    /**
     * Ends `user`'s typing in `room` without a push, for a command about to
     * end it (the other nodes' copies told); only a member's state counts,
     * as the command would fail otherwise. True when there was one.
     */
    const endOwnTyping = (user: UserRef | null, room: string): boolean => {
      if (user === null) return false;
      const key = `${user.id} ${room}`;
      const t = typing.get(key);
      if (t === undefined || rooms()?.isMember(t.room, user.id) !== true) return false;
      clearTimeout(t.timer);
      typing.delete(key);
      share(user, t.room, 'end');
      return true;
    };
    /**
     * A copy another node owns: it ends without a push when the owner says so
     * (its `end` comes before its `stop` push); if the owner falls silent for
     * `ms` (killed), this node pushes the `stop` to its own members instead.
     */
    const copy = (user: UserRef, room: string, ms: number) => {
      const key = `${user.id} ${room}`;
      const current = typing.get(key);
      if (current !== undefined) clearTimeout(current.timer);
      const timer = setTimeout(() => {
        if (typing.get(key)?.timer !== timer) return;
        typing.delete(key);
        const members = [...(rooms()?.membersOf(room) ?? [])].filter((id) => id !== user.id);
        server.hub.pushLocal(members, ['room', room, 'typing', user.name, 'stop']);
      }, ms);
      timer.unref();
      typing.set(key, { user, room, timer, owner: false });
    };
    /** Starts or renews the state with this node as the owner of its timer. */
    const own = (user: UserRef, room: string) => {
      const key = `${user.id} ${room}`;
      const current = typing.get(key);
      if (current !== undefined) clearTimeout(current.timer);
      const timer = setTimeout(() => stopTyping(key), timeoutMs);
      timer.unref();
      typing.set(key, { user, room, timer, owner: true });
      share(user, room, 'start');
      return current === undefined;
    };
    const offCluster =
      cluster?.on(TYPING_STATE, (_channel, f) => {
        const { r: room, u: id, n: name, s } = f;
        if (typeof room !== 'string' || typeof id !== 'number' || typeof name !== 'string') return;
        const key = `${id} ${room}`;
        const current = typing.get(key);
        if (current !== undefined) clearTimeout(current.timer);
        if (s !== 'start') return void typing.delete(key);
        // another node owns it now: this copy only remembers, unless the owner never ends it
        copy({ id, name }, room, timeoutMs + PASSIVE_GRACE_MS);
      }) ?? (() => {});

    return {
      dispose() {
        offCluster();
        for (const t of typing.values()) clearTimeout(t.timer);
        typing.clear();
      },
      hooks: {
        online(user) {
          void announce(user, 'online');
        },
        offline(user, time) {
          // every node hears the offline: the owner of each typing state pushes its stop and ends the copies;
          // a copy waits a little for that, then pushes the stop here itself (the owner's node may be the one that died)
          for (const [key, t] of typing) {
            if (t.user.id !== user.id) continue;
            if (t.owner) endTyping(key, true);
            else copy(t.user, t.room, PASSIVE_GRACE_MS);
          }
          // the push goes out once the last-seen time is stored: a `presence` query its hearers send
          // back (on any node of a cluster) answers that time, not 0 (never seen)
          const stored = server.store
            .transaction((tx: Kysely<Tables>) =>
              tx
                .insertInto('presence_last_seen')
                .values({ user_id: user.id, last_seen: time })
                // two quick offlines may commit in either order: the later time stays
                .onConflict((oc) => oc.column('user_id').doUpdateSet({ last_seen: time }).where('presence_last_seen.last_seen', '<', time))
                .execute(),
            )
            .catch((err: unknown) => log.warn({ err: (err as Error).message, user: user.name }, 'last-seen time not stored'));
          void announce(user, 'offline', stored);
        },
      },
      filters: {
        /**
         * A `say` that will be posted ends the sayer's typing in that room without a
         * `stop` push (the members see the message instead), so their next `start` is
         * pushed again (MODULES.md). Runs before the rooms handler, hence the checks
         * that make the say succeed: well-formed and from a member.
         */
        say(c, args) {
          if (args.length === 2) endOwnTyping(c.session.user, args[0]!);
        },
        /**
         * A `leave` ends the leaver's typing in that room at once, with its `stop`
         * pushed to the other members before the `left` (MODULES.md is silent; a
         * member who has gone must not be shown typing, nor a `stop` about a room
         * arrive after they left it). Before: the timer pushed the `stop` seconds
         * after the `left`. Also ends a copy whose owner is another node (told by `end`).
         */
        leave(c, args) {
          const user = c.session.user;
          if (args.length === 1 && user !== null && endOwnTyping(user, args[0]!)) pushTyping(user, args[0]!, 'stop');
        },
      },
      commands: {
        async presence(c, args) {
          c.session.requireUser();
          expectArgs(args, 1, 'presence,<user>');
          const user = await c.server.users.find(args[0]!);
          if (user === null) throw new CommandError('user_not_found', `no user ${args[0]}`);
          const cluster = c.server.hub.cluster;
          if (cluster === undefined ? c.server.hub.isOnline(user.id) : await cluster.isOnline(user.id)) return ['presence', user.name, 'online'];
          const row = await db().selectFrom('presence_last_seen').select('last_seen').where('user_id', '=', user.id).executeTakeFirst();
          return ['presence', user.name, 'offline', String(row?.last_seen ?? 0)];
        },
        typing(c, args) {
          const user = c.session.requireUser();
          expectArgs(args, 2, 'typing,<room>,start|stop');
          const [room, state] = args as [string, string];
          if (state !== 'start' && state !== 'stop') throw new CommandError('syntax', 'usage: typing,<room>,start|stop');
          checkRoom(room); // invalid_room, as every command taking a room answers
          if (rooms()?.isMember(room, user.id) !== true) throw new CommandError('not_in_room', `you are not in ${room}`);
          if (state === 'stop') return stopTyping(`${user.id} ${room}`);
          // a repeated start (through any node) only renews the timer
          if (own(user, room)) pushTyping(user, room, 'start');
        },
      },
    };
  },
});
