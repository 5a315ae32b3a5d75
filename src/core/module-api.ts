/**
 * The module API: everything a module file under `modules/` may use.
 *
 * A module is a file whose default export is `defineModule({...})`. Handlers
 * get a per-connection context and the request's argument fields, and return
 * reply fields (or nothing, which means `ok`). They never touch sockets;
 * they reach other users through `server.hub` and keep data in their own
 * tables through `server.store` (asynchronous, any backend). What needs the running server (timers, a
 * repository, services for other modules) is built in `setup(ctx)`, which
 * gets a typed context, so module files hold no server state of their own.
 */
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { ErrorSpec } from './errors.ts';
import type { Migration } from '../store/store.ts';
export type { Migration, MigrationContext } from '../store/store.ts';

/** Reply fields; `undefined` (no return) means `ok`, `[]` the empty frame. */
export type Reply = readonly string[] | undefined | void;
export type Handler = (ctx: CommandContext, args: string[]) => Reply | Promise<Reply>;
/** Runs before the handler of a command another module defines; throw (or reject) to refuse. */
export type Filter = (ctx: CommandContext, args: string[]) => void | Promise<void>;

export type UserRef = { readonly id: number; readonly name: string };

export interface SessionApi {
  readonly id: number;
  /** 'tcp', 'ws', ... */
  readonly transport: string;
  readonly remoteAddress: string;
  readonly user: UserRef | null;
  /** The logged-in user, or throws `not_logged_in`. */
  requireUser(): UserRef;
  /** Pushes a frame to this connection only. False when the connection is gone. */
  push(fields: readonly string[]): boolean;
  /** Makes this connection `user` once the current reply is written; stored messages follow it. */
  loginAs(user: UserRef): void;
  /**
   * The running request's reply is written only once `until` settles: for a
   * push the request caused that goes out later than the request's own
   * code ends (after a commit, or in a cluster's order). An error reply does
   * not wait. Pushes before replies (MODULES.md).
   */
  delayReply(until: Promise<unknown>): void;
}

export interface CommandContext {
  readonly session: SessionApi;
  readonly server: ServerApi;
}

/** What a module's cluster handler gets: the channel, the message's fields, and the whole message (its origin node). */
export type ClusterHandler = (channel: string, fields: Readonly<Record<string, unknown>>, message: { readonly origin: string; readonly kind: string }) => void;

/**
 * The other nodes of a cluster (CLUSTER.md), present only with --bus. Pushes
 * to users through the hub cross nodes by themselves; this is for modules
 * whose fan-out has its own channel (a room's) or that keep state every
 * node needs (room membership).
 */
export interface ClusterApi {
  readonly nodeId: string;
  /** Counted subscription; resolves once active. */
  subscribe(channel: string): Promise<void>;
  unsubscribe(channel: string): void;
  /** Publishes to the other nodes subscribed, after the commit of the transaction the caller runs in (at once outside one). */
  publish(channel: string, kind: string, fields: Record<string, unknown>): void;
  /** Handles the other nodes' messages of `kind` (on any channel this node subscribes); returns its removal. */
  on(kind: string, handler: ClusterHandler): () => void;
  /** Messages may have been lost (Redis came back): re-read what matters from the store. */
  onResubscribed(handler: () => void): () => void;
  /** Channels this node holds for each user with connections here, from their login on (subscribed before its reply). */
  follows(provider: (userId: number) => Iterable<string>): () => void;
  /** One more channel for the user (their new room), when they have connections here; resolves once active. */
  follow(userId: number, channel: string): Promise<void>;
  unfollow(userId: number, channel: string): void;
  /** Whether the user has a connection on any node. */
  isOnline(userId: number): Promise<boolean>;
}

export interface HubApi {
  /** Pushes to every connection logged in as the user, on every node; returns how many were reached on this one. */
  pushToUser(userId: number, fields: readonly string[]): number;
  /** Pushes one frame (formatted once) to every connection of each user, on every node; returns connections reached on this one. */
  pushToUsers(userIds: Iterable<number>, fields: readonly string[]): number;
  /** Pushes to the users' connections on this node only (what every node of a cluster pushes itself: presence, a room's fan-out). */
  pushLocal(userIds: Iterable<number>, fields: readonly string[]): number;
  /** The cluster, with --bus; undefined for a server alone. */
  readonly cluster: ClusterApi | undefined;
  /**
   * Appends the frame to the user's inbox (DELIVERY.md) durably, whatever
   * the mailbox holds, then pushes it to their connections; 'stored' when
   * none was there to take it live (their next login gets it). `cause`:
   * the request that made it; when that request came on an inbox connection
   * of `user` itself, its reply waits for the entry (a request's pushes come
   * before its reply, even behind a replay).
   */
  deliver(user: UserRef, fields: readonly string[], cause?: CommandContext): Promise<'pushed' | 'stored'>;
  /** Whether the user has a connection on this node (any node: cluster.isOnline). */
  isOnline(userId: number): boolean;
  /** Sessions logged in as the user on this node (read-only view). */
  sessionsOf(userId: number): readonly SessionApi[];
  /** Ends a connection's login (it stays open, logged out), as when the token it logged in with is revoked. */
  logout(session: SessionApi): void;
}

/** One page of a user's inbox, as GET /api/inbox answers it. */
export type InboxPage = {
  readonly epoch: string;
  readonly head: number;
  readonly entries: readonly { readonly seq: number; readonly fields: readonly string[] }[];
};

/** The per-user inbox (DELIVERY.md): the core's, offered to the modules that expose it (send, sync, resume, api). */
export interface InboxApi {
  /**
   * `send`: appends `send,<sender>,<command...>` to the recipient's inbox and
   * `sent,<recipient>,<command...>` to the sender's, in one commit, then
   * pushes both. `mailbox_full` when the entry would wait among
   * `--mailbox-size` not-yet-received others.
   */
  send(ctx: CommandContext, recipient: UserRef, command: readonly string[]): Promise<void>;
  /** `sync`: the connection becomes an inbox connection (no stream until `resume`). */
  sync(session: SessionApi): void;
  /** `resume,<epoch>,<after>`: the reply fields (`resumed,<epoch>,<head>`); the stream starts once the reply is written. */
  resume(session: SessionApi, epoch: string, after: string): Promise<string[]>;
  /**
   * A page of entries with seq > after (a seq or `latest`; default 0), at
   * most `limit` (default 100, at most 1000); they count as received unless
   * `written` is false (a HEAD request: nothing reaches the client).
   */
  read(user: UserRef, after: string | undefined, limit: string | undefined, epoch?: string, written?: boolean): Promise<InboxPage>;
}

export interface UsersApi {
  /** Case-insensitive look-up; null when no such user. */
  find(name: string): Promise<UserRef | null>;
  byId(id: number): Promise<UserRef | null>;
  /** Validates, hashes and commits a new account; `remoteAddress` (the client's) gets its fair share of the hashing queue. */
  register(name: string, password: string, remoteAddress?: string): Promise<UserRef>;
  /** Checks a password; throws `wrong_user_or_password` or `too_many_attempts`. */
  authenticate(name: string, password: string, remoteAddress: string): Promise<UserRef>;
  /**
   * Charges one request of `bytes` payload bytes to the user's budget
   * (`--user-rate`, `--user-bytes`); throws `rate_limited` when it is spent.
   * Commands pay through their connection or `invoke`: this is for a route
   * that answers without invoking a command.
   */
  charge(userId: number, bytes: number): void;
  /**
   * Charges bytes a request makes the server keep, beyond its own payload,
   * to the user's byte budget (`--user-bytes`), without refusing it: the
   * user's next requests are `rate_limited` until the budget has refilled.
   */
  chargeBytes(userId: number, bytes: number): void;
}

/**
 * The store, for a module's own tables (created by its `migrations`). Queries
 * are Kysely's, typed with the module's tables (`store.db as Kysely<MyTables>`)
 * and compiled for whichever backend runs (SQLite or PostgreSQL).
 */
export interface StoreApi {
  /** Reads; a write here is refused (it would be acknowledged before it is durable). */
  readonly db: Kysely<any>;
  /**
   * Writes: `fn`'s queries commit together and the promise resolves once the
   * commit is durable, so a reply sent after it reports a write that lasts.
   * Concurrent transactions share commits. A storage failure rejects with the
   * `unavailable` error. Called while another transaction of the same
   * async call chain is open (a command run by `once`), it joins that one
   * and commits with it; reads through `db` in that chain see its writes.
   */
  transaction<R>(fn: (tx: Kysely<any>) => Promise<R>): Promise<R>;
  /**
   * Runs `fn` once the open transaction of this call chain is durable, or at
   * once when there is none: pushes that report a write go out through it,
   * so that none is seen before its commit (and none if it rolls back).
   */
  afterCommit(fn: () => void): void;
  /**
   * True while a transaction of this call chain is open (a command run by
   * `once`): work that batches several requests' writes together (a room's
   * says) must then write on its own, inside that transaction.
   */
  inTransaction(): boolean;
}

/**
 * Named objects modules offer each other (rooms offers `rooms`, friends
 * `friends`), so one module can use another when it is loaded and do
 * without it when it is not. Look them up when needed, not at init.
 */
export interface ServicesApi {
  provide(name: string, service: object): void;
  get<T extends object>(name: string): T | undefined;
}

export interface ServerApi {
  readonly version: string;
  readonly protocolVersion: number;
  readonly hub: HubApi;
  readonly inbox: InboxApi;
  readonly users: UsersApi;
  readonly store: StoreApi;
  readonly log: Logger;
  readonly services: ServicesApi;
  /** Parsed option values, core and module options alike, by flag name (`friends-only`). */
  readonly options: Readonly<Record<string, unknown>>;
  /** Command names now loaded, sorted. */
  commands(): string[];
  /** Module names now loaded, in load order. */
  modules(): string[];
  /** The loaded modules' definitions, in load order (the info module reads usages and push words from them). */
  definitions(): readonly { readonly name: string; readonly def: ModuleDefinition; readonly commands: readonly string[] }[];
  /** Runs a command as if the connection had sent it; failures are CommandErrors. */
  invoke(ctx: CommandContext, fields: readonly string[]): Reply | Promise<Reply>;
  /**
   * A context for running commands on behalf of someone who is not a live
   * connection (an HTTP request): not online, receives no pushes.
   */
  context(user: UserRef | null, remoteAddress: string, transport: string): CommandContext;
  now(): number;
}

export type OptionSpec =
  | { readonly type: 'boolean'; readonly default: boolean; readonly description: string }
  | { readonly type: 'number'; readonly default: number; readonly min?: number; readonly description: string }
  | { readonly type: 'string'; readonly default: string; readonly description: string };

export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

/** A module's option values, typed from its `options` declaration. */
export type OptionValues<O extends OptionSpecs> = {
  readonly [K in keyof O]: O[K] extends { type: 'boolean' } ? boolean : O[K] extends { type: 'number' } ? number : string;
};

/** What `setup` gets: the server, and this module's own options and logger. */
export interface ModuleContext<O extends OptionSpecs = OptionSpecs> {
  readonly server: ServerApi;
  readonly options: OptionValues<O>;
  /** The server's logger with `module: <name>`. */
  readonly log: Logger;
}

/** An HTTP request as a module route sees it (the gateway's framework stays out of modules). */
export type HttpRequest = {
  readonly method: string;
  readonly url: string;
  readonly params: Readonly<Record<string, string>>;
  readonly query: Readonly<Record<string, string | undefined>>;
  readonly body: unknown;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly remoteAddress: string;
};

/** A string body is sent as text/plain, anything else as JSON; no body with 204. */
export type HttpReply = { readonly status?: number; readonly body?: unknown; readonly headers?: Readonly<Record<string, string>> };

export type HttpRoute = {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'OPTIONS';
  /** find-my-way syntax: `/api/rooms/:room/messages` */
  readonly path: string;
  /** Throw a CommandError to answer `{"error": type, "info": ...}` with the status its ErrorSpec declares. */
  readonly handler: (req: HttpRequest, server: ServerApi) => HttpReply | Promise<HttpReply>;
  /** Headers on every reply of this route, error replies included (CORS, for one). */
  readonly headers?: Readonly<Record<string, string>>;
};

export interface ModuleHooks {
  /** A connection logged in as `user` (after its reply was written). */
  login?(session: SessionApi, user: UserRef): void;
  /** A connection stopped being `user` (closed, or logged in as someone else). */
  logout?(session: SessionApi, user: UserRef): void;
  /** The user's first connection logged in (in a cluster: the first on any node; every node hears it). */
  online?(user: UserRef): void;
  /** The user's last connection went away, at `time` (ms) (in a cluster: the last on any node; every node hears it). */
  offline?(user: UserRef, time: number): void;
}

/** The parts of a module that work at run time; declared directly, or returned by `setup`. */
export interface ModuleRuntime {
  readonly commands?: Readonly<Record<string, Handler>>;
  /** Run before the named command (another module's or this one's); throw to refuse. */
  readonly filters?: Readonly<Record<string, Filter>>;
  readonly hooks?: ModuleHooks;
  /** HTTP routes this module mounts on the HTTP gateway (`--http-port` or `--ws-port`). */
  readonly routes?: readonly HttpRoute[];
  /** Services offered to other modules by name (see ServicesApi). */
  readonly services?: Readonly<Record<string, object>>;
  /** Called when the module is unloaded (reload or shutdown): clear timers here. */
  dispose?(): void;
}

export interface ModuleDefinition<O extends OptionSpecs = OptionSpecs> extends ModuleRuntime {
  /** Defaults to the file name. */
  readonly name?: string;
  readonly description?: string;
  /**
   * How to call each command, for people (`help,<command>`, the console's
   * hints): the request, optionally ` -> ` and the reply, e.g.
   * `'say,<room>,<text> -> said,<room>,<id>,<time>'`.
   */
  readonly usage?: Readonly<Record<string, string>>;
  /** First fields of the frames this module pushes (`room`): clients learn them (`pushes`) to tell pushes from replies. */
  readonly pushes?: readonly string[];
  /**
   * This module's commands whose reply starts with their own name although
   * that name is a push word (`presence,<user>` answers `presence,...`):
   * a client takes such a frame as the reply while the command is outstanding.
   */
  readonly repliesLikePushes?: readonly string[];
  /** Schema steps applied once each, in order, versioned per module (see Migration). */
  readonly migrations?: readonly Migration[];
  /** Command-line flags (`--name`) and `TEXTSERVER_NAME` variables this module reads. */
  readonly options?: O;
  /** Error types this module adds to the catalogue. */
  readonly errors?: Readonly<Record<string, ErrorSpec>>;
  /** Services other modules must provide (by name) for this one to load. */
  readonly requires?: readonly string[];
  /**
   * Called once loaded (after its migrations), before any command runs; what
   * it returns joins the declared commands, hooks, routes and services.
   */
  setup?(ctx: ModuleContext<O>): ModuleRuntime | void | Promise<ModuleRuntime | void>;
  /** The older form of `setup`: gets the server only. */
  init?(server: ServerApi): void | Promise<void>;
}

/** Identity helper that types a module's default export (and `setup`'s options from `options`). */
export function defineModule<const O extends OptionSpecs = Record<never, OptionSpec>>(definition: ModuleDefinition<O>): ModuleDefinition<O> {
  return definition;
}

import { CommandError } from './errors.ts';
export { CommandError, fail } from './errors.ts';
export { prepared, type Prepared } from '../store/prepared.ts';
export { TurnBatch } from './turn-batch.ts';

/** Throws `syntax` (with the usage text) unless there are exactly `count` arguments. */
export function expectArgs(args: readonly string[], count: number, usage: string): void {
  if (args.length !== count) throw new CommandError('syntax', `usage: ${usage}`);
}
