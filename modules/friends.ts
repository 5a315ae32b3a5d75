/**
 * Friends and friend requests (MODULES.md, friends). Pushes to a user with
 * no connection are stored like an offline `send`. With `--friends-only`,
 * `send` to a non-friend answers `not_friends` (a filter on `send`).
 * Offers the `friends` service (`friendsOf`) to other modules.
 */
import type { StatementSync } from 'node:sqlite';
import { CommandError, defineModule, expectArgs, type CommandContext, type ServerApi, type UserRef } from '../src/core/module-api.ts';

export type FriendsService = { friendsOf(userId: number): number[]; areFriends(a: number, b: number): boolean };

type Queries = Record<'isFriend' | 'friends' | 'hasRequest' | 'requests' | 'addRequest' | 'dropRequest' | 'befriend' | 'unfriend', StatementSync>;

let q: Queries | undefined;
let server: ServerApi | undefined;

function queries(): Queries {
  if (q === undefined) throw new Error('friends module not initialised');
  return q;
}

const areFriends = (a: number, b: number) => queries().isFriend.get(a, b) !== undefined;
const hasRequest = (from: number, to: number) => queries().hasRequest.get(from, to) !== undefined;

/** Push, or store for the next login; a full mailbox must not undo a committed change. */
function notify(user: UserRef, fields: string[]): void {
  try {
    server!.hub.deliver(user, fields);
  } catch (err) {
    server!.log.warn({ user: user.name, push: fields[1], err: (err as Error).message }, 'friend push not delivered');
  }
}

function target(ctx: CommandContext, args: string[], usage: string): { me: UserRef; other: UserRef | null } {
  const me = ctx.session.requireUser();
  expectArgs(args, 1, usage);
  return { me, other: ctx.server.users.find(args[0]!) };
}

function befriend(me: UserRef, other: UserRef): void {
  server!.db.transaction(() => {
    queries().dropRequest.run(other.id, me.id);
    queries().dropRequest.run(me.id, other.id);
    queries().befriend.run(me.id, other.id, Date.now());
    queries().befriend.run(other.id, me.id, Date.now());
  });
  notify(me, ['friend', 'added', other.name]);
  notify(other, ['friend', 'added', me.name]);
}

const names = (ids: { id: number }[]) => ids.map((r) => server!.users.byId(Number(r.id))?.name ?? `#${r.id}`);

export default defineModule({
  description: 'friends and friend requests',
  usage: {
    friend_request: 'friend_request,<user> -> ok',
    friend_accept: 'friend_accept,<user> -> ok',
    friend_deny: 'friend_deny,<user> -> ok',
    friend_remove: 'friend_remove,<user> -> ok',
    friends: 'friends -> friends[,<user>...]',
    friend_requests: 'friend_requests -> friend_requests[,<user>...]',
  },
  pushes: ['friend'],
  errors: {
    already_friends: { fatal: false, info: 'you are friends already', status: 409 },
    no_request: { fatal: false, info: 'that user has not asked you', status: 404 },
    not_friends: { fatal: false, info: 'you are not friends', status: 403 },
  },
  options: {
    'friends-only': { type: 'boolean', default: false, description: 'send only reaches friends (others answer not_friends)' },
  },
  migrations: [
    `CREATE TABLE friendships (user_id INTEGER NOT NULL, friend_id INTEGER NOT NULL, since INTEGER NOT NULL,
       PRIMARY KEY (user_id, friend_id)) WITHOUT ROWID;
     CREATE TABLE friend_requests (id INTEGER PRIMARY KEY AUTOINCREMENT, from_id INTEGER NOT NULL, to_id INTEGER NOT NULL,
       created_at INTEGER NOT NULL, UNIQUE (from_id, to_id));
     CREATE INDEX friend_requests_to ON friend_requests(to_id, id);`,
  ],
  init(api) {
    server = api;
    const p = (sql: string) => api.db.prepare(sql);
    q = {
      isFriend: p('SELECT 1 FROM friendships WHERE user_id = ? AND friend_id = ?'),
      friends: p('SELECT friend_id AS id FROM friendships WHERE user_id = ?'),
      hasRequest: p('SELECT 1 FROM friend_requests WHERE from_id = ? AND to_id = ?'),
      requests: p('SELECT from_id AS id FROM friend_requests WHERE to_id = ? ORDER BY id'),
      addRequest: p('INSERT INTO friend_requests (from_id, to_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING'),
      dropRequest: p('DELETE FROM friend_requests WHERE from_id = ? AND to_id = ?'),
      befriend: p('INSERT INTO friendships (user_id, friend_id, since) VALUES (?, ?, ?) ON CONFLICT DO NOTHING'),
      unfriend: p('DELETE FROM friendships WHERE user_id = ? AND friend_id = ?'),
    };
    const service: FriendsService = {
      friendsOf: (userId) => (queries().friends.all(userId) as { id: number }[]).map((r) => Number(r.id)),
      areFriends,
    };
    api.services.provide('friends', service);
  },
  dispose() {
    q = undefined;
  },
  filters: {
    send(ctx, args) {
      if (ctx.server.options['friends-only'] !== true) return;
      const me = ctx.session.user;
      if (me === null || args.length < 2) return; // send's own checks answer these
      const to = ctx.server.users.find(args[0]!);
      if (to !== null && to.id !== me.id && !areFriends(me.id, to.id)) {
        throw new CommandError('not_friends', `${to.name} is not your friend`);
      }
    },
  },
  commands: {
    friend_request(ctx, args) {
      const { me, other } = target(ctx, args, 'friend_request,<user>');
      if (other === null) throw new CommandError('user_not_found', `no user ${args[0]}`);
      if (other.id === me.id) throw new CommandError('invalid_name', 'you cannot befriend yourself');
      if (areFriends(me.id, other.id)) throw new CommandError('already_friends', `you and ${other.name} are friends already`);
      if (hasRequest(other.id, me.id)) return befriend(me, other);
      if (hasRequest(me.id, other.id)) return;
      queries().addRequest.run(me.id, other.id, Date.now());
      notify(other, ['friend', 'request', me.name]);
    },
    friend_accept(ctx, args) {
      const { me, other } = target(ctx, args, 'friend_accept,<user>');
      if (other === null || !hasRequest(other.id, me.id)) throw new CommandError('no_request', `${args[0]} has not asked you`);
      befriend(me, other);
    },
    friend_deny(ctx, args) {
      const { me, other } = target(ctx, args, 'friend_deny,<user>');
      if (other === null || !hasRequest(other.id, me.id)) throw new CommandError('no_request', `${args[0]} has not asked you`);
      queries().dropRequest.run(other.id, me.id);
      notify(other, ['friend', 'denied', me.name]);
    },
    friend_remove(ctx, args) {
      const { me, other } = target(ctx, args, 'friend_remove,<user>');
      if (other === null || !areFriends(me.id, other.id)) throw new CommandError('not_friends', `you are not friends with ${args[0]}`);
      ctx.server.db.transaction(() => {
        queries().unfriend.run(me.id, other.id);
        queries().unfriend.run(other.id, me.id);
      });
      notify(me, ['friend', 'removed', other.name]);
      notify(other, ['friend', 'removed', me.name]);
    },
    friends(ctx, args) {
      const me = ctx.session.requireUser();
      expectArgs(args, 0, 'friends');
      return ['friends', ...names(queries().friends.all(me.id) as { id: number }[]).sort()];
    },
    friend_requests(ctx, args) {
      const me = ctx.session.requireUser();
      expectArgs(args, 0, 'friend_requests');
      return ['friend_requests', ...names(queries().requests.all(me.id) as { id: number }[])];
    },
  },
});
