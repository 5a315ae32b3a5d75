/**
 * `--store postgres://...`: PostgreSQL 15+ through node-postgres. Each
 * transaction runs on a pooled connection with `synchronous_commit = on`,
 * so its COMMIT returns once the WAL is flushed; PostgreSQL flushes the
 * commits of concurrent transactions together (its own group commit). The
 * pool reconnects by itself; a probe with back-off tells readiness.
 */
import { Kysely, sql } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import { afterCommit, runTransaction, type AmbientDriver } from '../ambient.ts';
import { migrate } from '../migrations.ts';
import { redactUrl } from '../../redact-url.ts';
import { ConfigError } from '../../config.ts';
import { NulSafePostgresDialect } from './nul-safe.ts';
import { preparedName } from '../prepared.ts';
import type { Migration, Store } from '../store.ts';

// int8 (ids, times, counts) as numbers: they stay far below 2^53
pg.types.setTypeParser(pg.types.builtins.INT8, (v: string) => Number(v));

/**
 * SQLSTATE classes of a failing server, not a failing query; 25006
 * (read_only_sql_transaction): a server that takes no writes, a standby
 * after a failover, is down for a store that must commit; and the refusals
 * of a new connection once running (28: a password rotated under the
 * server, 3D000: its database dropped): the store is gone for it as surely.
 */
const FAILURE_STATES = /^(08|28|53|57P|58|XX|25006$|3D000$)/;
/**
 * SQLSTATEs of a query PostgreSQL gave up on while the server itself is
 * fine, under an operator's own settings or another application's locks:
 * serialization_failure and deadlock_detected, lock_not_available
 * (lock_timeout), query_canceled (statement_timeout, pg_cancel_backend),
 * and the idle-in-transaction and transaction timeouts. Nothing of the
 * request was committed: it answers `unavailable` ("try again"), as a
 * failed commit does, and the store stays up (readiness unchanged).
 */
const GAVE_UP_STATES = new Set(['40001', '40P01', '55P03', '57014', '25P03', '25P04']);
const FAILURE_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
const FAILURE_TEXT =
  /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|not queryable|Query read timeout/i;

const PROBE_MS = 2000;
const PROBE_MAX_MS = 5000;
/**
 * A server that stops answering without closing its sockets (a hung host, a
 * network partition) would leave a query, and the client connection whose
 * request waits on it, waiting forever: no query waits longer than this for
 * its answer (node-postgres then cuts the pipelined connection), and the
 * request answers `unavailable`. Far above any query's time on a live server.
 */
const QUERY_TIMEOUT_MS = 10_000;
/** The probe's own bound, connecting included: /readyz says 503 within 5 s of the server going silent (CLUSTER.md rule 6). */
const PROBE_TIMEOUT_MS = 2500;

/**
 * node-postgres writes each message (BEGIN, a statement's parse/bind/execute)
 * with its own system call, which on loopback cost more CPU than the rest of a
 * small write. Held until the end of the tick, the statements a transaction
 * issues together (BEGIN and its first statement) leave in one write.
 */
function holdWritesForTurn(client: pg.PoolClient): void {
  const stream = (client as unknown as { connection: { stream: NodeJS.WritableStream & { cork(): void; uncork(): void } } }).connection.stream;
  const write = stream.write;
  let held = false;
  const release = () => {
    held = false;
    stream.uncork();
  };
  stream.write = function (this: typeof stream, ...args: unknown[]) {
    if (!held) {
      held = true;
      stream.cork();
      process.nextTick(release);
    }
    return (write as (...a: unknown[]) => boolean).apply(this, args);
  } as typeof stream.write;
}

/**
 * Kysely sends every query unnamed, so PostgreSQL parses and plans it each
 * time. The hot ones (prepared.ts: a room message, an inbox head and entry)
 * go as named statements instead: parsed and planned once per connection,
 * then only bound and executed.
 */
function nameHotStatements(client: pg.PoolClient): void {
  const query = client.query as (...args: unknown[]) => unknown;
  (client as unknown as { query: (...args: unknown[]) => unknown }).query = function (this: pg.PoolClient, config: unknown, values?: unknown, callback?: unknown) {
    const name = typeof config === 'string' && Array.isArray(values) ? preparedName(config) : undefined;
    if (name === undefined) return query.call(this, config, values, callback);
    return query.call(this, { name, text: config, values }, callback);
  };
}

export class PostgresStore implements Store {
  readonly dialect = 'postgres' as const;
  readonly db: Kysely<any>;
  readonly #pool: pg.Pool;
  readonly #url: string;
  /** The probe's own connection: a pool busy with slow requests is not a server that is down. */
  #probeClient: pg.Client | undefined;
  /** Initialized by the first query, which `open` runs before anything can start a transaction. */
  readonly #driver: AmbientDriver;
  readonly #log: Logger;
  #up = true;
  #probe: NodeJS.Timeout | undefined;
  #closed = false;

  private constructor(url: string, log: Logger) {
    this.#log = log;
    this.#url = url;
    this.#pool = new pg.Pool({
      connectionString: url,
      max: 16,
      connectionTimeoutMillis: 10_000, // includes waiting for a free pooled connection under load
      query_timeout: QUERY_TIMEOUT_MS,
      idleTimeoutMillis: 30_000,
      application_name: 'textserver',
      // queries are written without waiting for the previous answer (BEGIN travels with the first statement)
      pipeline: true,
    } as pg.PoolConfig);
    // an idle connection that dies must not crash the process, nor by itself say the server is down:
    // a restart closes it, but so does a healthy server's idle_session_timeout; the probe tells them apart
    this.#pool.on('error', () => this.#suspect());
    // nor one that dies while checked out (a restart in the middle of a transaction): pg-pool listens
    // for errors only on idle clients, and an 'error' with no listener is an uncaught exception. The
    // queries on it fail by themselves (answered unavailable) and the pool drops it on release.
    this.#pool.on('connect', (client) => {
      client.on('error', () => this.#suspect());
      holdWritesForTurn(client);
      nameHotStatements(client);
      // acknowledged means durable, and transactions run at the isolation their locking is built for
      // (read committed: rows locked in ascending order, then read as committed), whatever the database's
      // or role's defaults. Not a startup `options`: the URL's own (`?options=-c search_path=...`) would
      // replace it. Queued before the pool hands the connection out; a failure here fails the queries behind it too.
      client
        .query("SELECT set_config('synchronous_commit', 'on', false), set_config('default_transaction_isolation', 'read committed', false)")
        .catch(() => {});
    });
    const dialect = new NulSafePostgresDialect({ pool: this.#pool });
    this.db = new Kysely<any>({ dialect });
    this.#driver = dialect.driver!;
  }

  /** Connects once, so a URL that cannot be reached stops the server at start. */
  static async open(url: string, log: Logger): Promise<PostgresStore> {
    const store = new PostgresStore(url, log);
    let database: { name: string; encoding: string } | undefined;
    try {
      const { rows } = await sql<{ name: string; encoding: string }>`SELECT current_database() AS name, current_setting('server_encoding') AS encoding`.execute(
        store.db,
      );
      database = rows[0];
    } catch (err) {
      await store.#pool.end().catch(() => {});
      throw new Error(`cannot reach PostgreSQL at ${redactUrl(url)}: ${startError(err as Error)}`);
    }
    // any Unicode text is stored: a LATIN1 (or other 8-bit) database would refuse most of it, request by request.
    // SQL_ASCII stores the UTF-8 bytes as they come, which round-trips
    if (database !== undefined && !['UTF8', 'SQL_ASCII'].includes(database.encoding)) {
      await store.#pool.end().catch(() => {});
      throw new ConfigError(
        `PostgreSQL: the database ${database.name} is encoded in ${database.encoding}, which cannot hold every text textserver stores; ` +
          "create it with ENCODING 'UTF8' (createdb -E UTF8 -T template0)",
      );
    }
    store.#schedule(PROBE_MS);
    return store;
  }

  get up(): boolean {
    return this.#up;
  }

  transaction<R>(fn: (tx: Kysely<any>) => Promise<R>): Promise<R> {
    const done = runTransaction(this.db, this.#driver, fn, async () => {
      this.#up = true;
    });
    // a failure in work no request waits on (a mailbox drain, a sweep) marks the store down too (readiness)
    done.catch((err: unknown) => this.isFailure(err));
    return done;
  }

  afterCommit(fn: () => void): void {
    afterCommit(fn);
  }

  async migrate(owner: string, migrations: readonly Migration[]): Promise<void> {
    try {
      await this.#migrate(owner, migrations);
    } catch (err) {
      const code = (err as { code?: string }).code;
      // duplicate_table, duplicate_object: a database shared with another application that has a table
      // (or index) of the same name; textserver never touches it, so say where its tables can go instead
      if (code === '42P07' || code === '42710') {
        throw new ConfigError(
          `PostgreSQL: the database already holds a table or index textserver did not create (${owner} schema): ${(err as Error).message}; ` +
            'give textserver a database of its own, or a schema of its own named in the URL (?options=-c%20search_path%3D<schema>)',
        );
      }
      // invalid_schema_name: the search_path names no schema that exists (a database whose public schema was dropped)
      if (code === '3F000') {
        throw new ConfigError(
          `PostgreSQL: no schema to create textserver's tables in (${owner} schema): ${(err as Error).message}; ` +
            'create one the role may create in, and name it in the URL (?options=-c%20search_path%3D<schema>)',
        );
      }
      // insufficient_privilege: the role of the URL may not create textserver's tables; the operator's to fix, so say how
      if (code !== '42501') throw err;
      throw new ConfigError(
        `PostgreSQL: the role cannot create textserver's tables (${owner} schema): ${(err as Error).message}; ` +
          "make the role the database's owner, or GRANT CREATE ON SCHEMA public TO it, or start once with a role that may",
      );
    }
  }

  #migrate(owner: string, migrations: readonly Migration[]): Promise<void> {
    return migrate(
      {
        dialect: 'postgres',
        transaction: (fn) => this.transaction(fn),
        script: async (tx, text) => void (await sql.raw(text).execute(tx)),
        // one lock for every migration of every owner: servers starting together take turns
        lock: async (tx) => void (await sql`SELECT pg_advisory_xact_lock(787800001)`.execute(tx)),
      },
      owner,
      migrations,
    );
  }

  isFailure(err: unknown): boolean {
    if (typeof err !== 'object' || err === null) return false;
    const e = err as { code?: string; message?: string };
    if (typeof e.code === 'string' && GAVE_UP_STATES.has(e.code)) return true;
    const failed = (typeof e.code === 'string' && (FAILURE_STATES.test(e.code) || FAILURE_ERRNOS.has(e.code))) || FAILURE_TEXT.test(e.message ?? '');
    if (failed) this.#failed(err as Error);
    return failed;
  }

  /** A pooled connection died: probe soon. The queries that were on it fail by themselves, and say so (isFailure). */
  #suspect(): void {
    if (this.#up) this.#schedule(250);
  }

  #failed(err: Error): void {
    if (this.#up) this.#log.error({ err: err.message }, 'PostgreSQL unreachable: writes answer unavailable until it is back');
    this.#up = false;
    this.#schedule(250);
  }

  /** Probes the server: every PROBE_MS while up, with back-off while down. */
  #schedule(ms: number): void {
    if (this.#closed) return;
    clearTimeout(this.#probe);
    this.#probe = setTimeout(() => {
      this.#ping().then(
        () => {
          if (!this.#up) this.#log.info('PostgreSQL reachable again');
          this.#up = true;
          this.#schedule(PROBE_MS);
        },
        (err: unknown) => {
          if (this.#up) this.#failed(err as Error);
          this.#schedule(Math.min(PROBE_MAX_MS, ms * 2));
        },
      );
    }, ms);
    this.#probe.unref();
  }

  /** Whether a session on the probe's connection may write (made again after any failure); rejects within PROBE_TIMEOUT_MS. */
  async #ping(): Promise<void> {
    let client = this.#probeClient;
    try {
      if (client === undefined) {
        const made = new pg.Client({
          connectionString: this.#url,
          connectionTimeoutMillis: PROBE_TIMEOUT_MS,
          query_timeout: PROBE_TIMEOUT_MS,
          application_name: 'textserver',
        });
        // a connection closed while idle (a restart, idle_session_timeout) is replaced by the next ping, not counted as down
        const dead = () => {
          if (this.#probeClient === made) this.#probeClient = undefined;
        };
        made.on('error', dead);
        made.on('end', dead);
        this.#probeClient = client = made;
        await made.connect();
      }
      // a standby answers SELECT 1 too; its sessions are read-only. A new session sees the database's
      // and role's defaults, so a connection that was read-only is made again for the next probe
      const { rows } = await client.query<{ ro: string }>("SELECT current_setting('transaction_read_only') AS ro");
      if (rows[0]?.ro === 'on') throw new Error('PostgreSQL takes no writes (read-only: a standby?)');
      if (this.#closed) this.#dropProbeClient();
    } catch (err) {
      if (this.#probeClient === client) this.#probeClient = undefined;
      endQuietly(client);
      throw err;
    }
  }

  #dropProbeClient(): void {
    endQuietly(this.#probeClient);
    this.#probeClient = undefined;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#probe);
    this.#dropProbeClient();
    await this.db.destroy().catch(() => {});
  }
}

/** node-postgres's words for a server asking for a password the URL does not give are its internals', not the operator's. */
function startError(err: Error): string {
  if (/password must be a string/i.test(err.message)) {
    return 'the server asks for a password and none was given (put it in the URL, percent-encoded, or in PGPASSWORD)';
  }
  return err.message;
}

/** Not awaited: ending a connection to a server that does not answer waits for nothing useful. */
function endQuietly(client: pg.Client | undefined): void {
  client?.end().catch(() => {});
}
