/**
 * The connections to Redis of --bus: node-redis clients that reconnect with
 * back-off for ever, never crash the process, tell when they go down and
 * come back (one log line each, not one per retry), and notice a silent
 * network within seconds (a PING every second, the socket closed after 3 s
 * without a byte) so /readyz answers 503 within the 5 s of CLUSTER.md.
 * The socket's timeout counts writes as activity too, so a command
 * connection kept busy (heartbeats, logins) would never time out: its
 * commands would wait for a frozen Redis for ever. It is also dropped and
 * made again when its PING goes unanswered for 3 s, which fails what waits
 * on it (the callers fall back to this node alone) and what is asked until
 * Redis answers again.
 */
import { createClient, type RedisClientType } from 'redis';
import type { Logger } from 'pino';
import { createHash } from 'node:crypto';

export type RedisClient = RedisClientType;

/** A connection whose PING has gone unanswered this long is taken as lost (as the socket timeout takes an idle one). */
const SILENT_MS = 3000;

/** Back-off between reconnection attempts: 50 ms doubling to 2 s, with jitter so nodes do not retry in step. */
export function reconnectDelay(retries: number): number {
  return Math.min(50 * 2 ** Math.min(retries, 10), 2000) + Math.floor(Math.random() * 100);
}

export type ClientOptions = {
  /** For the log lines: `commands` or `subscriber`. */
  role: string;
  /**
   * Commands given while disconnected fail at once (true: the command
   * connection, whose callers fall back or count a drop) or wait for the
   * connection (false: the subscriber, whose subscriptions are made again
   * anyway).
   */
  failWhileDown: boolean;
};

/** A client, not yet connected: call connectInBackground(). */
export function newRedisClient(url: string, options: ClientOptions, log: Logger): RedisClient {
  const client = createClient({
    url,
    disableOfflineQueue: options.failWhileDown,
    pingInterval: 1000,
    socket: { connectTimeout: 2000, socketTimeout: 3000, reconnectStrategy: reconnectDelay },
  }) as unknown as RedisClient;
  let down = false;
  let everReady = false;
  // node-redis emits 'error' on every failed attempt; without a listener the process would crash
  client.on('error', (err: Error) => {
    if (down || !everReady) {
      if (!down) log.warn({ role: options.role, err: err.message }, 'redis unreachable; retrying');
      down = true;
      return;
    }
    down = true;
    log.warn({ role: options.role, err: err.message }, 'redis connection lost; reconnecting');
  });
  client.on('ready', () => {
    if (down) log.info({ role: options.role }, 'redis connection back');
    down = false;
    everReady = true;
  });
  // the subscriber only writes its PINGs and (un)subscriptions: its socket timeout sees it fall silent
  if (options.failWhileDown) dropWhenSilent(client, options.role, log);
  return client;
}

/** Drops and makes again a connection that is open but answers nothing (Redis frozen, a network lost without a reset). */
function dropWhenSilent(client: RedisClient, role: string, log: Logger): void {
  let answered = performance.now();
  client.on('ping-interval', () => (answered = performance.now()));
  client.on('ready', () => (answered = performance.now()));
  const timer = setInterval(() => {
    if (!client.isOpen) {
      clearInterval(timer); // closed for good (destroy() and connect() below run in one go)
      return;
    }
    if (!client.isReady || performance.now() - answered <= SILENT_MS) return;
    log.warn({ role }, 'redis silent; reconnecting');
    client.destroy();
    client.connect().catch(() => {}); // only when closed before it connected
  }, 500);
  timer.unref();
}

/**
 * Connects, retrying for ever in the background: resolves on the first
 * connection or after `waitMs`, whichever comes first (a node may start while
 * Redis is down; it then works alone until Redis comes back).
 */
export async function connectInBackground(client: RedisClient, waitMs: number): Promise<void> {
  const connected = client.connect().then(
    () => {},
    () => {}, // only when closed before it connected
  );
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([connected, new Promise<void>((r) => (timer = setTimeout(r, waitMs)))]);
  clearTimeout(timer);
}

/** Closes a client whatever its state, waiting at most a second for the replies in flight; never rejects. */
export async function closeClient(client: RedisClient): Promise<void> {
  if (!client.isOpen) return;
  if (!client.isReady) {
    client.destroy();
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((r) => (timer = setTimeout(r, 1000)));
  await Promise.race([client.close().catch(() => {}), late]);
  clearTimeout(timer);
  if (client.isOpen) client.destroy();
}

/**
 * A Lua script run with EVALSHA, sent in full (EVAL) only when Redis does
 * not have it yet (after a restart), so the common case sends 40 bytes.
 */
export class Script {
  readonly #source: string;
  readonly #sha: string;

  constructor(source: string) {
    this.#source = source;
    this.#sha = createHash('sha1').update(source).digest('hex');
  }

  async run(client: RedisClient, keys: string[], args: (string | number)[]): Promise<unknown> {
    const options = { keys, arguments: args.map(String) };
    try {
      return await client.evalSha(this.#sha, options);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return await client.eval(this.#source, options);
    }
  }
}
