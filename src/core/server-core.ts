import type { Logger } from 'pino';
import { CommandError } from './errors.ts';
import { Hub } from './hub.ts';
import type { CommandContext, Reply, ServerApi, UserRef } from './module-api.ts';
import { ModuleSet, type LoadedModule } from './module-set.ts';
import { PasswordHasher } from './passwords.ts';
import { Router } from './router.ts';
import type { Session } from './session.ts';
import { Users } from './users.ts';
import type { ServerOptions } from '../config.ts';
import { CoreData } from '../store/core-data.ts';
import type { Store } from '../store/store.ts';

export const PROTOCOL_VERSION = 1;

/**
 * The transport-independent parts, wired together: the router and the
 * module set behind it, the hub, accounts, and the live sessions.
 * Transports hand it sessions; sessions hand their requests to the router.
 */
export class ServerCore {
  readonly options: ServerOptions;
  readonly log: Logger;
  readonly store: Store;
  readonly users: Users;
  readonly hub: Hub;
  readonly router: Router;
  readonly moduleSet: ModuleSet;
  readonly api: ServerApi;
  readonly sessions = new Set<Session>();
  /** Plain counters, cheap enough for the hot path; /metrics reads them when scraped. */
  readonly counters = { slowConsumers: 0, framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0 };
  /** Set by the metrics gateway: sees each request's command, outcome and duration. */
  observer: ((command: string, outcome: string, seconds: number) => void) | undefined;
  readonly #perIp = new Map<string, number>();
  #sweeper: NodeJS.Timeout | undefined;

  constructor(options: ServerOptions, store: Store, log: Logger, version: string) {
    this.options = options;
    this.store = store;
    this.log = log;
    const hasher = new PasswordHasher(options.argon2, options.hashConcurrency, options.hashQueue);
    const data = new CoreData(store);
    this.users = new Users(data, hasher, options, log);
    this.router = new Router(log, (err) => store.isFailure(err));
    const modules = new ModuleSet({ options, store, log, router: this.router, api: () => this.api });
    this.moduleSet = modules;
    // a mailbox drain keeps at most half the outbound bound unread at a time
    this.hub = new Hub(data, log, () => this.options.mailboxSize, () => this.options.maxOutbound / 2, {
      login: (session, user) => modules.emit('login', session, user),
      logout: (session, user) => modules.emit('logout', session, user),
      online: (user) => modules.emit('online', user),
      offline: (user, time) => modules.emit('offline', user, time),
    });
    const router = this.router;
    this.api = {
      version,
      protocolVersion: PROTOCOL_VERSION,
      hub: this.hub,
      users: this.users,
      store: {
        db: store.db,
        transaction: (fn) => store.transaction(fn),
      },
      log,
      services: {
        provide: (name, service) => modules.provide(name, service),
        get: <T extends object>(name: string) => modules.service<T>(name),
      },
      get options() {
        return modules.values;
      },
      commands: () => router.commands(),
      modules: () => modules.modules.map((m) => m.name),
      invoke(ctx: CommandContext, fields: readonly string[]): Reply | Promise<Reply> {
        try {
          const result = router.invoke(ctx, fields);
          if (result instanceof Promise) return result.catch((err: unknown) => Promise.reject(router.toCommandError(err, ctx.session)));
          return result;
        } catch (err) {
          throw router.toCommandError(err, ctx.session);
        }
      },
      now: () => Date.now(),
      context: (user, remoteAddress, transport) => detachedContext(this.api, user, remoteAddress, transport),
    };
  }

  /** Routes one request: `fields[0]` names the command. Throws CommandError. */
  invoke(ctx: CommandContext, fields: readonly string[]): Reply | Promise<Reply> {
    return this.router.invoke(ctx, fields);
  }

  /** Expected failures pass through; anything else is logged with its stack and becomes `unhandled`. */
  toCommandError(err: unknown, session?: { id: number }): CommandError {
    return this.router.toCommandError(err, session);
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
    return this.moduleSet.modules;
  }

  /** Loads `modules.txt`; throws (naming the module) and leaves the old set in force on failure. */
  loadModules(): Promise<void> {
    return this.moduleSet.load();
  }

  /** SIGHUP: reload without dropping connections; a failure keeps the old set. */
  async reload(): Promise<boolean> {
    try {
      await this.moduleSet.load();
      this.log.info({ modules: this.api.modules() }, 'modules reloaded');
      return true;
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'module reload failed; keeping the modules in force');
      return false;
    }
  }

  /** Command names for metric labels: loaded ones, or `other` (labels stay bounded). */
  commandLabel(name: string): string {
    return this.router.has(name) ? name : 'other';
  }

  /** Flags declared by the loaded modules. */
  moduleFlags(): Set<string> {
    return this.moduleSet.flags();
  }

  /** Called after every successful (re)load: the HTTP gateway rebuilds its routes. */
  onModulesLoaded(listener: () => void): void {
    this.moduleSet.onLoaded(listener);
  }

  disposeModules(): void {
    this.moduleSet.dispose();
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
