/**
 * The HTTP API (GATEWAYS.md section 2) and token logins. Every route is a
 * thin translation onto the same commands a TCP client sends (`register`,
 * `rooms`, `join`, `say`, `history`, `send`, ...), run through
 * `server.invoke` for the bearer token's user. Also the `token,<token>`
 * command, so a browser that logged in over HTTP needs no password again.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import { parseHistory } from './rooms-history.ts';
import {
  CommandError,
  defineModule,
  expectArgs,
  type CommandContext,
  type HttpReply,
  type HttpRequest,
  type HttpRoute,
  type Reply,
  type ServerApi,
  type SessionApi,
  type UserRef,
} from '../src/core/module-api.ts';
import { userChannel } from '../src/bus/bus.ts';

type Tables = { api_tokens: { hash: string; user_id: number; created_at: number; expires_at: number } };

const hashToken = (token: string) => createHash('sha256').update(token).digest('hex');

async function issueToken(server: ServerApi, user: UserRef): Promise<string> {
  const token = randomBytes(32).toString('base64url'); // 256 bits; only its hash is stored
  const ttl = (server.options['token-ttl'] as number) * 1000;
  await server.store.transaction((tx: Kysely<Tables>) =>
    tx
      .insertInto('api_tokens')
      .values({ hash: hashToken(token), user_id: user.id, created_at: Date.now(), expires_at: Date.now() + ttl })
      .execute(),
  );
  return token;
}

async function userOfToken(server: ServerApi, token: string): Promise<UserRef | null> {
  const row = await (server.store.db as Kysely<Tables>)
    .selectFrom('api_tokens')
    .select('user_id')
    .where('hash', '=', hashToken(token))
    .where('expires_at', '>', Date.now())
    .executeTakeFirst();
  return row === undefined ? null : server.users.byId(Number(row.user_id));
}

/** RFC 6750 section 2.1: the scheme is case-insensitive (RFC 9110 section 11.1), spaces around the token are tolerated. */
function bearer(req: HttpRequest): string {
  const header = req.headers.authorization;
  const m = typeof header === 'string' ? /^[ \t]*bearer[ \t]+([A-Za-z0-9._~+/-]{16,256}=*)[ \t]*$/i.exec(header) : null;
  if (m === null) throw new CommandError('not_logged_in', 'send Authorization: Bearer <token>');
  return m[1]!;
}

/**
 * Connections logged in with each token (by hash), so that logging the
 * token out ends their logins too (GATEWAYS.md section 2). A `token` login
 * is recorded once the hub made it (the login hook), and forgotten when the
 * connection stops being that user.
 */
const liveLogins = new Map<string, Set<SessionApi>>();
let tokenOf = new WeakMap<SessionApi, string>();
/** `token` commands whose login the hub has not made yet (weak: the reply may never be written). */
let pendingLogins = new WeakMap<SessionApi, string>();

function recordLogin(session: SessionApi, hash: string): void {
  forgetLogin(session);
  let set = liveLogins.get(hash);
  if (set === undefined) liveLogins.set(hash, (set = new Set()));
  set.add(session);
  tokenOf.set(session, hash);
}

function forgetLogin(session: SessionApi): void {
  const hash = tokenOf.get(session);
  if (hash === undefined) return;
  tokenOf.delete(session);
  const set = liveLogins.get(hash);
  set?.delete(session);
  if (set?.size === 0) liveLogins.delete(hash);
}

/**
 * Records a token login, then reads the token once more. A logout whose
 * commit landed after the login's look-up but before this record found no
 * login to end; the second read, made after the record, sees that commit,
 * and this login ends here instead. (A logout committing after the record
 * finds the login in `liveLogins`.) When the store cannot answer, the login
 * ends too: a token that may be revoked must not stay in use.
 */
function recordTokenLogin(server: ServerApi, session: SessionApi, hash: string): void {
  recordLogin(session, hash);
  const end = () => {
    if (tokenOf.get(session) !== hash) return; // logged out or in as someone else since
    forgetLogin(session);
    server.hub.logout(session);
  };
  (server.store.db as Kysely<Tables>)
    .selectFrom('api_tokens')
    .select('hash')
    .where('hash', '=', hash)
    .executeTakeFirst()
    .then(
      (row) => row === undefined && end(),
      (err: unknown) => {
        server.log.warn({ err: (err as Error).message }, 'token login not confirmed (store unavailable); ended');
        end();
      },
    );
}

async function revoke(server: ServerApi, hash: string, userId: number): Promise<void> {
  await server.store.transaction((tx: Kysely<Tables>) => tx.deleteFrom('api_tokens').where('hash', '=', hash).execute());
  endLogins(server, hash);
  // in a cluster the token's logins on the other nodes end too: they hold the user's channel
  server.hub.cluster?.publish(userChannel(userId), TOKEN_REVOKED, { h: hash });
}

function endLogins(server: ServerApi, hash: string): void {
  for (const session of liveLogins.get(hash) ?? []) server.hub.logout(session);
  liveLogins.delete(hash);
}

const TOKEN_REVOKED = 'token-revoked';
/** Removes this module's cluster handler (set up again by a reload). */
let offRevoked = () => {};

async function authed(req: HttpRequest, server: ServerApi): Promise<CommandContext> {
  const user = await userOfToken(server, bearer(req));
  if (user === null) throw new CommandError('not_logged_in', 'the token is unknown or expired');
  return server.context(user, req.remoteAddress, 'http');
}

/** Runs one command and hands back its reply fields (failures stay CommandErrors). */
async function run(ctx: CommandContext, ...fields: string[]): Promise<string[]> {
  const reply: Reply = await ctx.server.invoke(ctx, fields);
  return reply === undefined ? ['ok'] : [...reply];
}

/**
 * A logged-in POST route's command, under `once` when the request carries
 * an `Idempotency-Key` header (DELIVERY.md section 3): a retried request
 * gets the first one's answer and changes nothing. `fits` says whether a
 * reply is one this route can answer with: `once` returns the reply
 * recorded for the key whatever the command, and a key first used by
 * another request (a join's `ok` for a post) would otherwise come back as
 * this route's success although nothing was done (422, as the IETF
 * Idempotency-Key draft has it).
 */
async function runOnce(req: HttpRequest, ctx: CommandContext, fits: (reply: readonly string[]) => boolean, ...fields: string[]): Promise<string[]> {
  const key = req.headers['idempotency-key'];
  if (key === undefined) return run(ctx, ...fields);
  if (typeof key !== 'string') throw new CommandError('syntax', 'one Idempotency-Key header at most');
  const reply = await run(ctx, 'once', key, ...fields);
  if (!fits(reply)) throw new CommandError('key_reused', `the Idempotency-Key ${key} was first used for another request`);
  return reply;
}

const isOk = (reply: readonly string[]) => reply.length === 1 && reply[0] === 'ok';

function stringField(body: unknown, key: string): string {
  const value = typeof body === 'object' && body !== null ? (body as Record<string, unknown>)[key] : undefined;
  if (typeof value !== 'string') throw new CommandError('syntax', `the JSON body needs a string "${key}"`);
  return value;
}

const NO_CONTENT: HttpReply = { status: 204 };

/**
 * `?last=n`, `?since=ms`, `?after=id` or `?before=id&n=` as a history query
 * (last 50 without one). They exclude each other: two of them is a
 * question with no single answer, refused rather than one silently ignored.
 */
function historyQuery(query: HttpRequest['query']): string[] {
  const given = ['last', 'since', 'after', 'before'].filter((k) => query[k] !== undefined);
  if (given.length > 1) throw new CommandError('syntax', `use one of ?last, ?since, ?after and ?before, not ${given.join(' and ')}`);
  if (query.n !== undefined && query.before === undefined) throw new CommandError('syntax', '?n goes with ?before');
  if (query.last !== undefined) return ['last', query.last];
  if (query.since !== undefined) return ['since', query.since];
  if (query.after !== undefined) return ['after', query.after];
  if (query.before !== undefined) return ['before', query.before, query.n ?? '50'];
  return ['last', '50'];
}

const routes: HttpRoute[] = [
  {
    method: 'POST',
    path: '/api/register',
    async handler(req, server) {
      const user = stringField(req.body, 'user');
      await run(server.context(null, req.remoteAddress, 'http'), 'register', user, stringField(req.body, 'password'));
      return { status: 201, body: { user: (await server.users.find(user))?.name ?? user } };
    },
  },
  {
    method: 'POST',
    path: '/api/login',
    async handler(req, server) {
      // the login command itself (throttling and all), so /metrics counts it as a TCP login; on a
      // detached context it only names the user: no stored message is drained into an HTTP reply
      const ctx = server.context(null, req.remoteAddress, 'http');
      await run(ctx, 'login', stringField(req.body, 'user'), stringField(req.body, 'password'));
      const user = ctx.session.requireUser();
      return { body: { user: user.name, token: await issueToken(server, user) } };
    },
  },
  {
    method: 'POST',
    path: '/api/logout',
    async handler(req, server) {
      const ctx = await authed(req, server);
      await revoke(server, hashToken(bearer(req)), ctx.session.requireUser().id);
      return NO_CONTENT;
    },
  },
  { method: 'GET', path: '/api/me', handler: async (req, server) => ({ body: { user: (await run(await authed(req, server), 'whoami'))[1] } }) },
  {
    method: 'GET',
    path: '/api/rooms',
    async handler(req, server) {
      return { body: { rooms: (await run(await authed(req, server), 'rooms')).slice(1) } };
    },
  },
  {
    method: 'POST',
    path: '/api/rooms/:room/join',
    async handler(req, server) {
      await runOnce(req, await authed(req, server), isOk, 'join', req.params.room!);
      return NO_CONTENT;
    },
  },
  {
    method: 'POST',
    path: '/api/rooms/:room/leave',
    async handler(req, server) {
      await runOnce(req, await authed(req, server), isOk, 'leave', req.params.room!);
      return NO_CONTENT;
    },
  },
  {
    method: 'GET',
    path: '/api/rooms/:room/messages',
    async handler(req, server) {
      const fields = await run(await authed(req, server), 'history', req.params.room!, ...historyQuery(req.query));
      const messages = parseHistory(fields);
      // a page that stopped at the byte bound ends with `more`: continue with after/before from its edge. Only
      // then is the key there, so a whole page is exactly GATEWAYS.md's {"room","messages"}
      const more = fields.length === 3 + 4 * messages.length + 1 && fields.at(-1) === 'more';
      return { body: more ? { room: fields[1], messages, more } : { room: fields[1], messages } };
    },
  },
  {
    method: 'POST',
    path: '/api/rooms/:room/messages',
    async handler(req, server) {
      const room = req.params.room!;
      const said = await runOnce(
        req,
        await authed(req, server),
        (reply) => reply.length === 4 && reply[0] === 'said' && reply[1]!.toLowerCase() === room.toLowerCase(),
        'say',
        room,
        stringField(req.body, 'text'),
      );
      return { status: 201, body: { id: Number(said[2]), time: Number(said[3]) } };
    },
  },
  {
    method: 'POST',
    path: '/api/send/:user',
    async handler(req, server) {
      const ctx = await authed(req, server);
      const body = req.body as { args?: unknown } | null;
      const args = body?.args ?? [];
      if (!Array.isArray(args) || args.some((a) => typeof a !== 'string')) throw new CommandError('syntax', '"args" must be an array of strings');
      await runOnce(req, ctx, isOk, 'send', req.params.user!, stringField(req.body, 'command'), ...(args as string[]));
      return NO_CONTENT;
    },
  },
  {
    // DELIVERY.md section 3: a page of the inbox after a seq; what it returns counts as received (a HEAD, which the
    // gateway answers with this route but without the body, returns nothing: it marks nothing)
    method: 'GET',
    path: '/api/inbox',
    async handler(req, server) {
      const user = (await authed(req, server)).session.requireUser();
      // no command runs it (invoke would charge it): the user's budget is paid here, like every other route's
      server.users.charge(user.id, req.url.length);
      return { body: await server.inbox.read(user, req.query.after, req.query.limit, req.query.epoch ?? '', req.method !== 'HEAD') };
    },
  },
  {
    method: 'GET',
    path: '/api/users/:user',
    async handler(req, server) {
      const ctx = await authed(req, server);
      const user = await server.users.find(req.params.user!);
      if (user === null) throw new CommandError('user_not_found', `no user ${req.params.user}`);
      const cluster = server.hub.cluster;
      if (cluster === undefined ? server.hub.isOnline(user.id) : await cluster.isOnline(user.id))
        return { body: { user: user.name, online: true, lastSeen: null } };
      let lastSeen = 0;
      try {
        lastSeen = Number((await run(ctx, 'presence', user.name))[3] ?? 0); // the presence module keeps last-seen times
      } catch (err) {
        // without the presence module there is no last-seen time; any other failure (the store down) is the answer
        if (!(err instanceof CommandError && err.type === 'command_not_found')) throw err;
      }
      return { body: { user: user.name, online: false, lastSeen } };
    },
  },
];

export default defineModule({
  description: 'HTTP API with bearer tokens, and token logins over any transport',
  usage: { token: 'token,<token> -> ok' },
  options: {
    'token-ttl': { type: 'number', default: 30 * 24 * 3600, min: 0.001, description: 'seconds a token from POST /api/login stays valid' },
  },
  migrations: [
    async ({ db }) => {
      await db.schema
        .createTable('api_tokens')
        .addColumn('hash', 'text', (c) => c.primaryKey())
        .addColumn('user_id', 'bigint', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('api_tokens_expiry').on('api_tokens').column('expires_at').execute();
    },
  ],
  async setup({ server }) {
    const now = Date.now();
    await server.store.transaction((tx: Kysely<Tables>) => tx.deleteFrom('api_tokens').where('expires_at', '<=', now).execute());
    offRevoked();
    offRevoked =
      server.hub.cluster?.on(TOKEN_REVOKED, (_channel, f) => {
        if (typeof f.h === 'string') endLogins(server, f.h);
      }) ?? (() => {});
    return {
      hooks: {
        login(session) {
          const hash = pendingLogins.get(session);
          pendingLogins.delete(session);
          if (hash === undefined)
            forgetLogin(session); // logged in some other way since
          else recordTokenLogin(server, session, hash);
        },
        logout(session) {
          pendingLogins.delete(session);
          forgetLogin(session);
        },
      },
    };
  },
  dispose() {
    offRevoked();
    offRevoked = () => {};
    liveLogins.clear();
    tokenOf = new WeakMap();
    pendingLogins = new WeakMap();
  },
  errors: {
    key_reused: { fatal: false, info: 'that Idempotency-Key was first used for another request', status: 422 },
  },
  routes,
  commands: {
    /** `token,<token>`: log in with a token from POST /api/login. */
    async token(ctx, args) {
      expectArgs(args, 1, 'token,<token>');
      const user = await userOfToken(ctx.server, args[0]!);
      if (user === null) throw new CommandError('wrong_user_or_password', 'the token is unknown or expired');
      ctx.session.loginAs(user);
      // already this user: the hub makes no new login, so no hook will record it
      if (ctx.session.user?.id === user.id) recordTokenLogin(ctx.server, ctx.session, hashToken(args[0]!));
      else pendingLogins.set(ctx.session, hashToken(args[0]!));
    },
  },
});
