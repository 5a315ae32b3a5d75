/**
 * The session registry: the one way in for every transport.
 *
 * - Every socket of every listener (TCP, TLS before its handshake, HTTP
 *   keep-alive or half-sent, the WebSocket it may become) is admitted here
 *   and counted against `--max-connections` and `--max-connections-per-ip`
 *   until it closes. Refusals are logged, one line per few seconds.
 * - Every session opened on an admitted socket is tracked here, and one
 *   coarse timer enforces PROTOCOL.md's request and idle timeouts for all.
 * - Once draining (graceful stop) no new session opens.
 */
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { CommandError } from './errors.ts';
import type { Link } from './link.ts';
import type { CommandContext, Reply, ServerApi, UserRef } from './module-api.ts';
import { Session } from './session.ts';
import type { ServerCore } from './server-core.ts';

/** How long a closing connection may take to flush (and the peer to answer a close) before it is destroyed. */
export const CLOSE_GRACE_MS = 2000;
/** At most one "connections refused" line per this many ms, with the count since the last. */
const REFUSAL_LOG_MS = 5000;

type Limits = {
  readonly maxConnections: number;
  readonly maxConnectionsPerIp: number;
  readonly idleTimeoutMs: number;
  readonly requestTimeoutMs: number;
};

export class SessionRegistry {
  /** Open sockets by listener (`tcp`, `tls`, `http`, `https`), for /metrics. */
  readonly sockets = new Map<string, number>();
  readonly stats = { refused: 0 };
  readonly #limits: Limits;
  readonly #log: Logger;
  readonly #sessions = new Set<Session>();
  readonly #perIp = new Map<string, number>();
  #open = 0;
  #draining = false;
  #sweeper: NodeJS.Timeout | undefined;
  #unlogged = 0;
  #lastRefusal: { address: string; reason: string } | undefined;
  #loggedAt = -Infinity;

  constructor(limits: Limits, log: Logger) {
    this.#limits = limits;
    this.#log = log;
  }

  /**
   * Counts a new socket until it closes; false (and counted as refused) when
   * a limit is reached: the caller closes it, with whatever its protocol
   * allows saying first.
   */
  admit(socket: Socket, listener: string): boolean {
    const address = socket.remoteAddress;
    if (address === undefined) return false; // already gone
    const fromIp = this.#perIp.get(address) ?? 0;
    const reason =
      this.#open >= this.#limits.maxConnections ? 'max-connections' : fromIp >= this.#limits.maxConnectionsPerIp ? 'max-connections-per-ip' : undefined;
    if (reason !== undefined) {
      this.#refused(address, reason);
      return false;
    }
    this.#open++;
    this.#perIp.set(address, fromIp + 1);
    this.sockets.set(listener, (this.sockets.get(listener) ?? 0) + 1);
    socket.once('close', () => {
      this.#open--;
      const n = (this.#perIp.get(address) ?? 1) - 1;
      if (n <= 0) this.#perIp.delete(address);
      else this.#perIp.set(address, n);
      this.sockets.set(listener, (this.sockets.get(listener) ?? 1) - 1);
    });
    return true;
  }

  /** Sockets open now, all listeners together. */
  get openSockets(): number {
    return this.#open;
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** Live sessions. */
  get size(): number {
    return this.#sessions.size;
  }

  [Symbol.iterator](): IterableIterator<Session> {
    return this.#sessions.values();
  }

  add(session: Session): void {
    this.#sessions.add(session);
  }

  /** True when the session was registered (so its detach work is still to do). */
  delete(session: Session): boolean {
    return this.#sessions.delete(session);
  }

  /** Graceful stop: no new sessions; each live one ends after its request in flight. */
  drain(): void {
    this.#draining = true;
    for (const session of this.#sessions) session.drain();
  }

  /** Enforces both timeouts of PROTOCOL.md section 1 with one coarse timer for all sessions. */
  startSweeper(alsoEachSweep?: () => void): void {
    const { idleTimeoutMs, requestTimeoutMs } = this.#limits;
    const every = Math.max(25, Math.min(1000, Math.floor(Math.min(idleTimeoutMs, requestTimeoutMs) / 4)));
    this.#sweeper = setInterval(() => {
      this.#sweep();
      this.#logRefusals();
      alsoEachSweep?.();
    }, every);
    this.#sweeper.unref();
  }

  stopSweeper(): void {
    clearInterval(this.#sweeper);
    this.#logRefusals(true);
  }

  #sweep(): void {
    const now = performance.now();
    const { idleTimeoutMs, requestTimeoutMs } = this.#limits;
    for (const session of this.#sessions) {
      if (!session.open) continue;
      if (!session.reading) {
        // backpressure holds the client's requests back until it reads its replies (or a queue
        // behind a running request empties): the frames wait on our side, so no request clock
        // runs against them; a client that reads nothing for the idle timeout is still cut
        if (!session.busy && now - session.lastActive >= idleTimeoutMs) {
          session.fatal(new CommandError('timeout', `replies not read within ${idleTimeoutMs / 1000} s`));
        }
        continue;
      }
      const partial = session.link.partialSince();
      if (partial > 0) {
        // a frame begun before reading was held gets the whole timeout again from the resumption
        if (now - Math.max(partial, session.resumedAt) >= requestTimeoutMs) {
          session.fatal(new CommandError('timeout', `request not completed within ${requestTimeoutMs / 1000} s`));
        }
      } else if (!session.busy && now - session.lastActive >= idleTimeoutMs) {
        session.fatal(new CommandError('timeout', `no request within ${idleTimeoutMs / 1000} s`));
      }
    }
  }

  #refused(address: string, reason: string): void {
    this.stats.refused++;
    this.#unlogged++;
    this.#lastRefusal = { address, reason };
    this.#logRefusals();
  }

  /** A flood of refusals is one line per REFUSAL_LOG_MS, not one per socket. */
  #logRefusals(now = false): void {
    const at = performance.now();
    if (this.#unlogged === 0 || (!now && at - this.#loggedAt < REFUSAL_LOG_MS)) return;
    this.#log.warn({ refused: this.#unlogged, last: this.#lastRefusal, open: this.#open }, 'connections refused');
    this.#unlogged = 0;
    this.#loggedAt = at;
  }
}

/**
 * Opens a session on an admitted transport link: the same for TCP, TLS and
 * WebSocket. Undefined while the server drains (the caller refuses).
 */
export function openSession(core: ServerCore, link: Link): Session | undefined {
  if (core.sessions.draining) return undefined;
  const session = new Session(core, link);
  core.sessions.add(session);
  return session;
}

/**
 * A request context for someone without a live connection (an HTTP
 * request): pushes go nowhere. The commands it runs are counted in
 * /metrics like a connection's requests (the outermost ones, as a
 * connection's `req,<id>,...` counts once).
 */
export function detachedContext(core: ServerCore, user: UserRef | null, remoteAddress: string, transport: string): CommandContext {
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
    // no connection to push to before its reply
    delayReply: () => {},
  };
  let depth = 0;
  const invoke = (ctx: CommandContext, fields: readonly string[]): Reply | Promise<Reply> => {
    if (depth > 0 || core.observer === undefined) return core.api.invoke(ctx, fields);
    const started = performance.now();
    const done = (outcome: string) => {
      depth--;
      core.observer?.(core.commandLabel(fields[0] ?? ''), outcome, (performance.now() - started) / 1000);
    };
    const failed = (err: unknown) => done(err instanceof CommandError ? err.type : 'unhandled');
    depth++;
    let result: Reply | Promise<Reply>;
    try {
      result = core.api.invoke(ctx, fields);
    } catch (err) {
      failed(err);
      throw err;
    }
    if (!(result instanceof Promise)) {
      done('ok');
      return result;
    }
    return result.then(
      (reply) => (done('ok'), reply),
      (err: unknown) => {
        failed(err);
        throw err;
      },
    );
  };
  const server: ServerApi = { ...core.api, invoke };
  return { session, server };
}
