import type { Logger } from 'pino';
import { CommandError, registerErrorType } from './errors.ts';
import { Hub } from './hub.ts';
import { loadModules, ModuleLoadError, type LoadedModule } from './module-loader.ts';
import type { CommandContext, Filter, Handler, ModuleHooks, Reply, ServerApi, UserRef } from './module-api.ts';
import { PasswordHasher } from './passwords.ts';
import type { Session } from './session.ts';
import { Users } from './users.ts';
import { ConfigError, resolveModuleOption, type ServerOptions } from '../config.ts';
import type { Store } from '../store/store.ts';

type Route = { readonly handler: Handler; readonly filters: readonly Filter[] };
type ModuleSet = { readonly modules: readonly LoadedModule[]; readonly routes: ReadonlyMap<string, Route> };

export const PROTOCOL_VERSION = 1;

/**
 * The transport-independent heart: the loaded modules and their router, the
 * hub, accounts, and the set of live sessions. Transports hand it sessions;
 * sessions hand it requests.
 */
export class ServerCore {
  readonly options: ServerOptions;
  readonly log: Logger;
  readonly store: Store;
  readonly users: Users;
  readonly hub: Hub;
  readonly api: ServerApi;
  readonly sessions = new Set<Session>();
  /** Plain counters, cheap enough for the hot path; /metrics reads them when scraped. */
  readonly counters = { slowConsumers: 0, framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0 };
  /** Set by the metrics gateway: sees each request's command, outcome and duration. */
  observer: ((command: string, outcome: string, seconds: number) => void) | undefined;
  readonly #perIp = new Map<string, number>();
  #set: ModuleSet = { modules: [], routes: new Map() };
  #services = new Map<string, object>();
  readonly #reloadListeners: (() => void)[] = [];
  #loadingServices: Map<string, object> | undefined;
  #sweeper: NodeJS.Timeout | undefined;

  constructor(options: ServerOptions, store: Store, log: Logger, version: string) {
    this.options = options;
    this.store = store;
    this.log = log;
    const hasher = new PasswordHasher(options.argon2, options.hashConcurrency, options.hashQueue);
    this.users = new Users(store, hasher, options, log);
    // a mailbox drain keeps at most half the outbound bound unread at a time
    this.hub = new Hub(store, () => this.options.mailboxSize, () => this.options.maxOutbound / 2, {
      login: (session, user) => this.#emit('login', session, user),
      logout: (session, user) => this.#emit('logout', session, user),
      online: (user) => this.#emit('online', user),
      offline: (user, time) => this.#emit('offline', user, time),
    });
    const core = this;
    this.api = {
      version,
      protocolVersion: PROTOCOL_VERSION,
      hub: this.hub,
      users: this.users,
      db: store.db,
      log,
      services: {
        provide: (name, service) => (this.#loadingServices ?? this.#services).set(name, service),
        get: <T extends object>(name: string) => this.#services.get(name) as T | undefined,
      },
      options: options.values,
      commands: () => [...this.#set.routes.keys()].sort(),
      modules: () => this.#set.modules.map((m) => m.name),
      invoke(ctx: CommandContext, fields: readonly string[]): Reply | Promise<Reply> {
        try {
          // a request with no connection (the HTTP API) pays its user's budget here; over a connection, Session charges it
          if (ctx.session.id === 0 && ctx.session.user !== null) core.users.budget.charge(ctx.session.user.id, fields.reduce((n, f) => n + f.length + 1, 0));
          const result = core.invoke(ctx, fields);
          if (result instanceof Promise) return result.catch((err: unknown) => Promise.reject(core.toCommandError(err, ctx.session)));
          return result;
        } catch (err) {
          throw core.toCommandError(err, ctx.session);
        }
      },
      now: () => Date.now(),
      context: (user, remoteAddress, transport) => detachedContext(this.api, user, remoteAddress, transport),
    };
  }

  /** Routes one request: `fields[0]` names the command. Throws CommandError. */
  invoke(ctx: CommandContext, fields: readonly string[]): Reply | Promise<Reply> {
    const name = fields[0]!;
    const route = this.#set.routes.get(name);
    if (route === undefined) {
      throw new CommandError('command_not_found', `no command ${JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}...` : name)}`);
    }
    const args = fields.slice(1);
    for (let i = 0; i < route.filters.length; i++) route.filters[i]!(ctx, args);
    return route.handler(ctx, args);
  }

  /** Expected failures pass through; anything else is logged with its stack and becomes `unhandled`. */
  toCommandError(err: unknown, session?: { id: number }): CommandError {
    if (err instanceof CommandError) return err;
    this.log.error({ err, session: session?.id }, 'unhandled error in a command');
    return new CommandError('unhandled');
  }

  // ---- sessions -------------------------------------------------------

  /** Whether a new connection from `address` is within the limits. */
  admit(address: string): boolean {
    return this.sessions.size < this.options.maxConnections && (this.#perIp.get(address) ?? 0) < this.options.maxConnectionsPerIp;
  }

  add(session: Session): void {
    this.sessions.add(session);
    this.#perIp.set(session.remoteAddress, (this.#perIp.get(session.remoteAddress) ?? 0) + 1);
  }

  /** Called once by a closing session. */
  detach(session: Session): void {
    if (!this.sessions.delete(session)) return;
    const n = (this.#perIp.get(session.remoteAddress) ?? 1) - 1;
    if (n <= 0) this.#perIp.delete(session.remoteAddress);
    else this.#perIp.set(session.remoteAddress, n);
    this.hub.detach(session);
  }

  /** Enforces both timeouts of PROTOCOL.md section 1 with one coarse timer for all sessions. */
  startSweeper(): void {
    const { idleTimeoutMs, requestTimeoutMs } = this.options;
    const every = Math.max(25, Math.min(1000, Math.floor(Math.min(idleTimeoutMs, requestTimeoutMs) / 4)));
    this.#sweeper = setInterval(() => this.#sweep(), every);
    this.#sweeper.unref();
  }

  stopSweeper(): void {
    clearInterval(this.#sweeper);
  }

  #sweep(): void {
    const now = performance.now();
    const { idleTimeoutMs, requestTimeoutMs } = this.options;
    for (const session of this.sessions) {
      if (!session.open) continue;
      const partial = session.link.partialSince();
      if (partial > 0) {
        if (now - partial >= requestTimeoutMs) {
          session.fatal(new CommandError('timeout', `request not completed within ${requestTimeoutMs / 1000} s`));
        }
      } else if (!session.busy && now - session.lastActive >= idleTimeoutMs) {
        session.fatal(new CommandError('timeout', `no request within ${idleTimeoutMs / 1000} s`));
      }
    }
    this.users.sweep(Date.now());
  }

  // ---- modules --------------------------------------------------------

  get modules(): readonly LoadedModule[] {
    return this.#set.modules;
  }

  /** Loads `modules.txt`; throws (naming the module) and leaves the old set in force on failure. */
  async loadModules(): Promise<void> {
    const modules = await loadModules(this.options.modulesList, this.options.modulesDir);
    const routes = buildRoutes(modules);
    for (const m of modules) {
      for (const [type, spec] of Object.entries(m.def.errors ?? {})) {
        try {
          registerErrorType(m.name, type, spec);
        } catch (err) {
          throw new ModuleLoadError(m.name, (err as Error).message);
        }
      }
      for (const [flag, spec] of Object.entries(m.def.options ?? {})) {
        try {
          this.options.values[flag] = resolveModuleOption(this.options.raw, flag, spec);
        } catch (err) {
          if (err instanceof ConfigError) throw new ModuleLoadError(m.name, err.message);
          throw err;
        }
      }
      try {
        this.store.migrate(`module:${m.name}`, m.def.migrations ?? []);
      } catch (err) {
        throw new ModuleLoadError(m.name, `migration failed: ${(err as Error).message}`);
      }
    }
    const started: LoadedModule[] = [];
    const services = new Map<string, object>();
    this.#loadingServices = services;
    try {
      for (const m of modules) {
        await m.def.init?.(this.api);
        started.push(m);
      }
    } catch (err) {
      for (const m of started) safely(() => m.def.dispose?.());
      throw new ModuleLoadError(started.length < modules.length ? modules[started.length]!.name : '?', `init failed: ${(err as Error).message}`);
    } finally {
      this.#loadingServices = undefined;
    }
    const old = this.#set;
    this.#set = { modules, routes };
    this.#services = services;
    for (const m of old.modules) safely(() => m.def.dispose?.());
    for (const listener of this.#reloadListeners) listener();
  }

  /** SIGHUP: reload without dropping connections; a failure keeps the old set. */
  async reload(): Promise<boolean> {
    try {
      await this.loadModules();
      this.log.info({ modules: this.#set.modules.map((m) => m.name) }, 'modules reloaded');
      return true;
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'module reload failed; keeping the modules in force');
      return false;
    }
  }

  /** Command names for metric labels: loaded ones, or `other` (labels stay bounded). */
  commandLabel(name: string): string {
    return this.#set.routes.has(name) ? name : 'other';
  }

  /** Flags declared by the loaded modules. */
  moduleFlags(): Set<string> {
    return new Set(this.#set.modules.flatMap((m) => Object.keys(m.def.options ?? {})));
  }

  /** Called after every successful (re)load: the HTTP gateway rebuilds its routes. */
  onModulesLoaded(listener: () => void): void {
    this.#reloadListeners.push(listener);
  }

  disposeModules(): void {
    for (const m of this.#set.modules) safely(() => m.def.dispose?.());
  }

  #emit<K extends keyof ModuleHooks>(hook: K, ...args: Parameters<NonNullable<ModuleHooks[K]>>): void {
    for (const m of this.#set.modules) {
      const fn = m.def.hooks?.[hook] as ((...a: unknown[]) => void) | undefined;
      if (fn === undefined) continue;
      try {
        fn(...args);
      } catch (err) {
        this.log.error({ err, module: m.name, hook }, 'module hook failed');
      }
    }
  }
}

/** A request context for someone without a live connection: pushes go nowhere. */
function detachedContext(server: ServerApi, user: UserRef | null, remoteAddress: string, transport: string): CommandContext {
  const session = {
    id: 0,
    transport,
    remoteAddress,
    user,
    requireUser(): UserRef {
      if (session.user === null) throw new CommandError('not_logged_in');
      return session.user;
    },
    push: () => false,
    loginAs(u: UserRef) {
      session.user = u;
    },
  };
  return { session, server };
}

function buildRoutes(modules: readonly LoadedModule[]): Map<string, Route> {
  const filters = new Map<string, Filter[]>();
  for (const m of modules) {
    for (const [command, filter] of Object.entries(m.def.filters ?? {})) {
      const list = filters.get(command) ?? [];
      list.push(filter);
      filters.set(command, list);
    }
  }
  const routes = new Map<string, Route>();
  for (const m of modules) {
    for (const [command, handler] of Object.entries(m.def.commands ?? {})) {
      routes.set(command, { handler, filters: filters.get(command) ?? [] });
    }
  }
  return routes;
}

function safely(fn: () => void): void {
  try {
    fn();
  } catch {
    // A module's cleanup failing must not stop the others'.
  }
}
