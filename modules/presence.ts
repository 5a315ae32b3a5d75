/**
 * Presence and typing (MODULES.md, presence). Online means at least one
 * logged-in connection; friends (from the `friends` service) and room
 * co-members (from the `rooms` service) hear of each change once. Typing
 * stops by itself after `--typing-timeout` seconds or when the user goes offline.
 */
import type { Kysely } from 'kysely';
import { CommandError, defineModule, expectArgs, type Migration, type UserRef } from '../src/core/module-api.ts';
import { checkRoom, type RoomsService } from './rooms.ts';
import type { FriendsService } from './friends.ts';
import { InOrder } from './in-order.ts';

type Tables = { presence_last_seen: { user_id: number; last_seen: number } };

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
    const typing = new Map<string, { user: UserRef; room: string; timer: NodeJS.Timeout }>();
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
    const announce = (user: UserRef, state: 'online' | 'offline') =>
      changes
        .run(
          user.id,
          () => audience(user),
          // every node hears each change (in a cluster too) and tells its own connections
          (ids) => server.hub.pushLocal(ids, ['presence', user.name, state]),
        )
        .catch((err: unknown) => log.warn({ err: (err as Error).message, user: user.name }, 'presence not announced'));
    const pushTyping = (user: UserRef, room: string, state: 'start' | 'stop') => {
      rooms()?.broadcast(room, ['room', room, 'typing', user.name, state], user.id);
    };
    const stopTyping = (key: string) => {
      const t = typing.get(key);
      if (t === undefined) return;
      clearTimeout(t.timer);
      typing.delete(key);
      pushTyping(t.user, t.room, 'stop');
    };

    return {
      dispose() {
        for (const t of typing.values()) clearTimeout(t.timer);
        typing.clear();
      },
      hooks: {
        online(user) {
          void announce(user, 'online');
        },
        offline(user, time) {
          for (const [key, t] of typing) if (t.user.id === user.id) stopTyping(key);
          server.store
            .transaction((tx: Kysely<Tables>) =>
              tx
                .insertInto('presence_last_seen')
                .values({ user_id: user.id, last_seen: time })
                // two quick offlines may commit in either order: the later time stays
                .onConflict((oc) => oc.column('user_id').doUpdateSet({ last_seen: time }).where('presence_last_seen.last_seen', '<', time))
                .execute(),
            )
            .catch((err: unknown) => log.warn({ err: (err as Error).message, user: user.name }, 'last-seen time not stored'));
          void announce(user, 'offline');
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
          const user = c.session.user;
          if (user === null || args.length !== 2) return;
          const key = `${user.id} ${args[0]!}`;
          const t = typing.get(key);
          if (t === undefined || rooms()?.isMember(t.room, user.id) !== true) return;
          clearTimeout(t.timer);
          typing.delete(key);
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
          const key = `${user.id} ${room}`;
          const current = typing.get(key);
          if (state === 'stop') return stopTyping(key);
          const timer = setTimeout(() => stopTyping(key), timeoutMs);
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
    };
  },
});
