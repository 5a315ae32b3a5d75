import type { Logger } from 'pino';
import { inAmbientTransaction } from '../store/ambient.ts';
import type { CommandError } from './errors.ts';
import { ClusterLink } from './cluster-link.ts';
import { Hub } from './hub.ts';
import type { CommandContext, Reply, ServerApi } from './module-api.ts';
import { ModuleSet, type LoadedModule } from './module-set.ts';
import { PasswordHasher } from './passwords.ts';
import { Router } from './router.ts';
import type { Session } from './session.ts';
import { detachedContext, SessionRegistry } from './sessions.ts';
import { TRUSTED_PER_NAME, Users } from './users.ts';
import type { ServerOptions } from '../config.ts';
import { CoreData } from '../store/core-data.ts';
import { InboxData } from '../store/inbox-data.ts';
import type { Store } from '../store/store.ts';
import type { Cluster } from '../bus/open-cluster.ts';

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
  readonly sessions: SessionRegistry;
  /** With --bus: this node's bus and cluster presence (open-cluster.ts). */
  readonly cluster: Cluster | undefined;
  /** Plain counters, cheap enough for the hot path; /metrics reads them when scraped. */
  readonly counters = { slowConsumers: 0, framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0 };
  /** Set by the metrics gateway: sees each request's command, outcome and duration. */
  observer: ((command: string, outcome: string, seconds: number) => void) | undefined;

  constructor(options: ServerOptions, store: Store, log: Logger, version: string, cluster?: Cluster) {
    this.options = options;
    this.cluster = cluster;
    this.store = store;
    this.log = log;
    this.sessions = new SessionRegistry(options, log);
    const hasher = new PasswordHasher(options.argon2, options.hashConcurrency, options.hashQueue);
    const data = new CoreData(store);
    const byName = cluster?.loginThrottle('name', options.loginFailLimit, options.loginFailWindowMs);
    const byIp = cluster?.loginThrottle('ip', options.loginFailLimitIp, options.loginFailWindowMs);
    // in a cluster the failure counters are the cluster's (Redis), so the limits hold for all nodes together
    this.users = new Users(data, hasher, options, log, byName !== undefined && byIp !== undefined ? { byName, byIp } : undefined, cluster?.trustedAddresses(TRUSTED_PER_NAME));
    this.router = new Router(log, (err) => store.isFailure(err));
    const modules = new ModuleSet({ options, store, log, router: this.router, api: () => this.api });
    this.moduleSet = modules;
    this.hub = new Hub(
      new InboxData(store),
      log,
      {
        mailboxSize: () => this.options.mailboxSize,
        // a mailbox drain or an inbox replay keeps at most half the outbound bound unread at a time
        window: () => this.options.maxOutbound / 2,
        retain: () => this.options.inboxRetain,
        maxAgeMs: () => this.options.inboxMaxAgeMs,
        replyWaitMs: () => this.options.requestTimeoutMs,
      },
      {
        login: (session, user) => modules.emit('login', session, user),
        logout: (session, user) => modules.emit('logout', session, user),
        online: (user) => modules.emit('online', user),
        offline: (user, time) => modules.emit('offline', user, time),
      },
      cluster === undefined
        ? undefined
        : { link: new ClusterLink(cluster.bus, cluster.presence, (fn) => store.afterCommit(fn), log), userById: (id) => this.users.byId(id) },
    );
    const router = this.router;
    const budget = this.users.budget;
    this.api = {
      version,
      protocolVersion: PROTOCOL_VERSION,
      hub: this.hub,
      inbox: this.hub.inbox,
      users: this.users,
      store: {
        db: store.db,
        transaction: (fn) => store.transaction(fn),
        afterCommit: (fn) => store.afterCommit(fn),
        inTransaction: () => inAmbientTransaction(),
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
      definitions: () => modules.modules.map((m) => ({ name: m.name, def: m.def, commands: Object.keys(m.runtime.commands) })),
      invoke(ctx: CommandContext, fields: readonly string[]): Reply | Promise<Reply> {
        try {
          // a request with no connection (the HTTP API) pays its user's budget here; over a connection, Session charges it
          if (ctx.session.id === 0 && ctx.session.user !== null)
            budget.charge(
              ctx.session.user.id,
              fields.reduce((n, f) => n + f.length + 1, 0),
            );
          const result = router.invoke(ctx, fields);
          if (result instanceof Promise) return result.catch((err: unknown) => Promise.reject(router.toCommandError(err, ctx.session)));
          return result;
        } catch (err) {
          throw router.toCommandError(err, ctx.session);
        }
      },
      now: () => Date.now(),
      context: (user, remoteAddress, transport) => detachedContext(this, user, remoteAddress, transport),
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

  // ---- sessions (admission and timeouts live in sessions.ts) ----------

  /** Called once by a closing session. */
  detach(session: Session): void {
    if (this.sessions.delete(session)) this.hub.detach(session);
  }

  startSweeper(): void {
    this.sessions.startSweeper(() => this.users.sweep(Date.now()));
    this.hub.inbox.startSweeper();
  }

  stopSweeper(): void {
    this.sessions.stopSweeper();
    this.hub.inbox.stopSweeper();
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
