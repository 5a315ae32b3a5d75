/**
 * Friends and friend requests (MODULES.md, friends). Pushes to a user with
 * no connection are stored like an offline `send`. With `--friends-only`,
 * `send` to a non-friend answers `not_friends` (a filter on `send`).
 * Offers the `friends` service (`friendsOf`) to other modules.
 */
import { CommandError, defineModule, expectArgs, type CommandContext, type ServerApi, type UserRef } from '../src/core/module-api.ts';
import { FRIENDS_MIGRATIONS, FriendStore } from './friends-store.ts';
import { OneAtATime } from './one-at-a-time.ts';
import { byUserName } from './user-order.ts';

export type FriendsService = { friendsOf(userId: number): Promise<number[]>; areFriends(a: number, b: number): Promise<boolean> };

async function target(ctx: CommandContext, args: string[], usage: string): Promise<{ me: UserRef; other: UserRef | null }> {
  const me = ctx.session.requireUser();
  expectArgs(args, 1, usage);
  return { me, other: await ctx.server.users.find(args[0]!) };
}

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
  migrations: FRIENDS_MIGRATIONS,
  setup(ctx) {
    const server: ServerApi = ctx.server;
    const store = new FriendStore(server.store);
    const friendsOnly = ctx.options['friends-only'];

    /** Push, or store for the next login; a full mailbox must not undo a committed change. `c`: the request, whose reply follows its own user's push. */
    const notify = async (c: CommandContext, user: UserRef, fields: string[]) => {
      try {
        await server.hub.deliver(user, fields, c);
      } catch (err) {
        ctx.log.warn({ user: user.name, push: fields[1], err: (err as Error).message }, 'friend push not delivered');
      }
    };
    /**
     * Both users told, the lower user id first: under `once` both pushes join one
     * transaction, and each locks its user's inbox stream, which every other
     * transaction locks in ascending id order too (no wait in a cycle).
     */
    const both = async (c: CommandContext, me: UserRef, other: UserRef, word: string) => {
      const [first, second] = me.id < other.id ? [me, other] : [other, me];
      await notify(c, first, ['friend', word, (first === me ? other : me).name]);
      await notify(c, second, ['friend', word, (second === me ? other : me).name]);
    };
    /** Told only by the call whose write made the friendship, so `added` goes out once. */
    const added = (c: CommandContext, me: UserRef, other: UserRef) => both(c, me, other, 'added');
    /**
     * The store decides each change in one transaction (the pair locked on PostgreSQL),
     * so nodes sharing a database agree. On this node a pair's changes also run one at a
     * time, so their pushes go out in the order of their writes.
     */
    const pairs = new OneAtATime<string>();
    const forPair = <T>(a: UserRef, b: UserRef, work: () => Promise<T>) => pairs.run(a.id < b.id ? `${a.id} ${b.id}` : `${b.id} ${a.id}`, work);
    const names = (ids: number[]) => Promise.all(ids.map(async (id) => (await server.users.byId(id))?.name ?? `#${id}`));

    return {
      services: {
        friends: { friendsOf: (id: number) => store.friendsOf(id), areFriends: (a: number, b: number) => store.areFriends(a, b) } satisfies FriendsService,
      },
      filters: {
        // synchronous unless --friends-only is on: an async filter would send every `send` down the router's slower path
        send(c, args) {
          if (!friendsOnly) return;
          const me = c.session.user;
          if (me === null || args.length < 2) return; // send's own checks answer these
          return (async () => {
            const to = await c.server.users.find(args[0]!);
            if (to !== null && to.id !== me.id && !(await store.areFriends(me.id, to.id))) {
              throw new CommandError('not_friends', `${to.name} is not your friend`);
            }
          })();
        },
      },
      commands: {
        async friend_request(c, args) {
          const { me, other } = await target(c, args, 'friend_request,<user>');
          if (other === null) throw new CommandError('user_not_found', `no user ${args[0]}`);
          if (other.id === me.id) throw new CommandError('invalid_name', 'you cannot befriend yourself');
          await forPair(me, other, async () => {
            const outcome = await store.request(me.id, other.id);
            if (outcome === 'already_friends') throw new CommandError('already_friends', `you and ${other.name} are friends already`);
            if (outcome === 'befriended') await added(c, me, other);
            if (outcome === 'requested') await notify(c, other, ['friend', 'request', me.name]);
          });
        },
        async friend_accept(c, args) {
          const { me, other } = await target(c, args, 'friend_accept,<user>');
          if (other === null) throw new CommandError('no_request', `${args[0]} has not asked you`);
          await forPair(me, other, async () => {
            const made = await store.accept(other.id, me.id);
            if (made === null) throw new CommandError('no_request', `${args[0]} has not asked you`);
            if (made) await added(c, me, other);
          });
        },
        async friend_deny(c, args) {
          const { me, other } = await target(c, args, 'friend_deny,<user>');
          if (other === null) throw new CommandError('no_request', `${args[0]} has not asked you`);
          await forPair(me, other, async () => {
            if (!(await store.dropRequest(other.id, me.id))) throw new CommandError('no_request', `${args[0]} has not asked you`);
            await notify(c, other, ['friend', 'denied', me.name]);
          });
        },
        async friend_remove(c, args) {
          const { me, other } = await target(c, args, 'friend_remove,<user>');
          if (other === null) throw new CommandError('not_friends', `you are not friends with ${args[0]}`);
          await forPair(me, other, async () => {
            if (!(await store.unfriend(me.id, other.id))) throw new CommandError('not_friends', `you are not friends with ${args[0]}`);
            await both(c, me, other, 'removed');
          });
        },
        async friends(c, args) {
          const me = c.session.requireUser();
          expectArgs(args, 0, 'friends');
          return ['friends', ...(await names(await store.friendsOf(me.id))).sort(byUserName)];
        },
        async friend_requests(c, args) {
          const me = c.session.requireUser();
          expectArgs(args, 0, 'friend_requests');
          return ['friend_requests', ...(await names(await store.requestsTo(me.id)))];
        },
      },
    };
  },
});
