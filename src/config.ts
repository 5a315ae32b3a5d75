/**
 * One typed options object, from defaults, `TEXTSERVER_*` environment
 * variables and command-line flags (flags win), validated once at start.
 * Modules declare their own flags; those are resolved the same way once the
 * modules are loaded.
 */
import { availableParallelism, hostname } from 'node:os';
import type { OptionSpec } from './core/module-api.ts';
import { redactUrl } from './redact-url.ts';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Kind = 'int' | 'seconds' | 'days' | 'string' | 'optional-string' | 'path' | 'optional-path' | 'level' | 'port' | 'optional-port' | 'list';

type FlagSpec = { readonly kind: Kind; readonly def: unknown; readonly min?: number; readonly help: string };

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export const CORE_FLAGS = {
  host: { kind: 'string', def: '127.0.0.1', help: 'address to listen on' },
  port: { kind: 'port', def: 7878, help: 'TCP port (0 picks a free port)' },
  data: { kind: 'path', def: './data', help: 'data directory (created if missing)' },
  store: { kind: 'string', def: 'sqlite', help: 'sqlite (a file in --data) or postgres://user@host:port/db' },
  'max-request': { kind: 'int', def: 1048576, min: 1, help: 'largest request payload in bytes' },
  'idle-timeout': { kind: 'seconds', def: 300, help: 'close a connection that sends no frame for this long' },
  'request-timeout': { kind: 'seconds', def: 30, help: 'close a connection whose frame is not complete in this time' },
  'mailbox-size': { kind: 'int', def: 1000, min: 1, help: 'stored messages per offline user' },
  'inbox-retain': { kind: 'int', def: 10000, min: 1, help: 'inbox entries kept per user (the newest; entries not yet received are kept regardless)' },
  'inbox-max-age': { kind: 'days', def: 30, help: 'days an inbox entry is kept (fractions allowed; entries not yet received are kept regardless)' },
  'modules-list': { kind: 'path', def: 'modules.txt', help: 'file listing the modules to load' },
  'modules-dir': { kind: 'path', def: 'modules', help: 'directory holding the module files' },
  'log-level': { kind: 'level', def: 'info', help: `${LEVELS.join(', ')} (debug and trace log nothing more than info yet)` },
  'max-outbound': { kind: 'int', def: 8 * 1024 * 1024, min: 1024, help: 'unsent bytes per connection before slow_consumer' },
  'max-connections': { kind: 'int', def: 10000, min: 1, help: 'open connections in all' },
  'max-connections-per-ip': { kind: 'int', def: 100, min: 1, help: 'open connections per client address' },
  'login-fail-limit': { kind: 'int', def: 5, min: 1, help: 'failed logins per user name before throttling' },
  'login-fail-limit-ip': { kind: 'int', def: 20, min: 1, help: 'failed logins per client address before throttling' },
  'login-fail-window': { kind: 'seconds', def: 60, help: 'throttling window' },
  'argon2-memory-kib': { kind: 'int', def: 19456, min: 8, help: 'argon2id memory cost' },
  'argon2-time': { kind: 'int', def: 2, min: 1, help: 'argon2id passes' },
  'argon2-parallelism': { kind: 'int', def: 1, min: 1, help: 'argon2id lanes' },
  'hash-concurrency': { kind: 'int', def: availableParallelism(), min: 1, help: 'argon2 operations at once' },
  'hash-queue': { kind: 'int', def: 1000, min: 0, help: 'argon2 operations waiting before too_many_attempts' },
  // the request budget lets a client do what the contracts describe at full speed (fill a 1000-message
  // mailbox, say the 501 messages that show history's 500 cap); the byte budget is what stops a flood
  'user-rate': { kind: 'int', def: 500, min: 0, help: 'requests per second per logged-in user before rate_limited (0: no limit)' },
  'user-rate-burst': { kind: 'int', def: 5000, min: 1, help: 'requests a user may send at once above --user-rate' },
  'user-bytes': { kind: 'int', def: 1048576, min: 0, help: 'request payload bytes per second per logged-in user before rate_limited (0: no limit)' },
  'user-bytes-burst': { kind: 'int', def: 4194304, min: 1, help: 'payload bytes a user may send at once above --user-bytes' },
  'ws-port': { kind: 'optional-port', def: '', help: 'WebSocket transport port, path /ws (0 picks a free port; off when unset)' },
  'http-port': { kind: 'optional-port', def: '', help: 'HTTP gateway port (off when unset; on the WebSocket port when only --ws-port is set)' },
  'ws-origins': { kind: 'list', def: '', help: "Origins allowed to open the WebSocket (default: the HTTP gateway's own origin)" },
  'tls-cert': { kind: 'optional-path', def: '', help: 'PEM certificate: serve TLS' },
  'tls-key': { kind: 'optional-path', def: '', help: 'PEM private key for --tls-cert' },
  bus: { kind: 'optional-string', def: '', help: 'redis://host:port: run as one node of a cluster (needs a postgres:// --store; off when unset)' },
  'node-id': { kind: 'optional-string', def: '', help: "this node's name in the cluster, logs and metrics (default: host name and process id)" },
  'presence-ttl': { kind: 'seconds', def: 15, help: 'with --bus: a node silent this long is gone, its users offline' },
} as const satisfies Record<string, FlagSpec>;

export type CoreFlag = keyof typeof CORE_FLAGS;

export type ServerOptions = {
  host: string;
  port: number;
  data: string;
  /** `sqlite` or a postgres:// URL */
  store: string;
  maxRequest: number;
  idleTimeoutMs: number;
  requestTimeoutMs: number;
  mailboxSize: number;
  inboxRetain: number;
  inboxMaxAgeMs: number;
  modulesList: string;
  modulesDir: string;
  logLevel: string;
  maxOutbound: number;
  maxConnections: number;
  maxConnectionsPerIp: number;
  loginFailLimit: number;
  loginFailLimitIp: number;
  loginFailWindowMs: number;
  argon2: { memoryKiB: number; time: number; parallelism: number };
  hashConcurrency: number;
  hashQueue: number;
  userRate: number;
  userRateBurst: number;
  userBytes: number;
  userBytesBurst: number;
  tls: { cert: string; key: string } | undefined;
  wsPort: number | undefined;
  httpPort: number | undefined;
  wsOrigins: string[];
  /** The Redis URL of --bus, or undefined: one process, no cluster. */
  bus: string | undefined;
  nodeId: string;
  presenceTtlMs: number;
  /** Every flag's value by flag name, module flags included. */
  values: Record<string, unknown>;
  /** Raw flags not claimed by the core, for the modules' own options. */
  raw: RawFlags;
};

export type RawFlags = { flags: Map<string, string | true>; env: Record<string, string | undefined> };

/** Splits argv into `--name value`, `--name=value` and bare `--name` flags. */
export function parseArgv(argv: readonly string[]): Map<string, string | true> {
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--') || arg === '--') throw new ConfigError(`unexpected argument ${arg}`);
    const eq = arg.indexOf('=');
    if (eq > 0) {
      flags.set(arg.slice(2, eq), arg.slice(eq + 1));
    } else {
      const next = argv[i + 1];
      if (next !== undefined && !next.startsWith('--')) {
        flags.set(arg.slice(2), next);
        i++;
      } else {
        flags.set(arg.slice(2), true);
      }
    }
  }
  return flags;
}

export function envName(flag: string): string {
  return `TEXTSERVER_${flag.toUpperCase().replace(/-/g, '_')}`;
}

function rawValue(raw: RawFlags, flag: string): string | true | undefined {
  return raw.flags.get(flag) ?? raw.env[envName(flag)];
}

function convert(flag: string, spec: FlagSpec, value: string | true): unknown {
  const text = value === true ? '' : value.trim();
  const bad = (what: string) => new ConfigError(`--${flag}: ${JSON.stringify(value === true ? '' : value)} is not ${what}`);
  switch (spec.kind) {
    case 'int': {
      if (!/^\d+$/.test(text)) throw bad('a whole number');
      const n = Number(text);
      if (!Number.isSafeInteger(n) || n < (spec.min ?? 0)) throw bad(`a whole number >= ${spec.min ?? 0}`);
      return n;
    }
    case 'seconds': {
      const n = Number(text);
      if (text === '' || !Number.isFinite(n) || n <= 0) throw bad('a positive number of seconds');
      return Math.round(n * 1000);
    }
    case 'days': {
      const n = Number(text);
      if (text === '' || !Number.isFinite(n) || n <= 0) throw bad('a positive number of days');
      return Math.max(1, Math.round(n * 86_400_000));
    }
    case 'port':
    case 'optional-port': {
      if (spec.kind === 'optional-port' && text === '') return undefined;
      const n = Number(text);
      if (!/^\d+$/.test(text) || n > 65535) throw bad('a port number from 0 to 65535');
      return n;
    }
    case 'level':
      if (!LEVELS.includes(text)) throw bad(`one of ${LEVELS.join(', ')}`);
      return text;
    case 'list':
      return text === ''
        ? []
        : text
            .split(',')
            .map((s) => s.trim())
            .filter((s) => s !== '');
    case 'string':
    case 'path':
      if (text === '') throw bad('a non-empty value');
      return text;
    case 'optional-path':
    case 'optional-string':
      return text;
  }
}

/** Resolves the core flags; the rest stay in `raw` for the modules. */
export function resolveOptions(argv: readonly string[], env: Record<string, string | undefined>): ServerOptions {
  const raw: RawFlags = { flags: parseArgv(argv), env };
  const values: Record<string, unknown> = {};
  for (const [flag, spec] of Object.entries(CORE_FLAGS) as [string, FlagSpec][]) {
    const value = rawValue(raw, flag);
    values[flag] = convert(flag, spec, value ?? String(spec.def));
  }
  const v = values as Record<CoreFlag, never>;
  const cert = v['tls-cert'] as string;
  const key = v['tls-key'] as string;
  if ((cert === '') !== (key === '')) throw new ConfigError('--tls-cert and --tls-key go together');
  const cluster = clusterOptions(v.bus, v['node-id'], v.store);
  return {
    host: v.host,
    port: v.port,
    data: v.data,
    store: v.store,
    maxRequest: v['max-request'],
    idleTimeoutMs: v['idle-timeout'],
    requestTimeoutMs: v['request-timeout'],
    mailboxSize: v['mailbox-size'],
    inboxRetain: v['inbox-retain'],
    inboxMaxAgeMs: v['inbox-max-age'],
    modulesList: v['modules-list'],
    modulesDir: v['modules-dir'],
    logLevel: v['log-level'],
    maxOutbound: v['max-outbound'],
    maxConnections: v['max-connections'],
    maxConnectionsPerIp: v['max-connections-per-ip'],
    loginFailLimit: v['login-fail-limit'],
    loginFailLimitIp: v['login-fail-limit-ip'],
    loginFailWindowMs: v['login-fail-window'],
    argon2: { memoryKiB: v['argon2-memory-kib'], time: v['argon2-time'], parallelism: v['argon2-parallelism'] },
    hashConcurrency: v['hash-concurrency'],
    hashQueue: v['hash-queue'],
    userRate: v['user-rate'],
    userRateBurst: v['user-rate-burst'],
    userBytes: v['user-bytes'],
    userBytesBurst: v['user-bytes-burst'],
    tls: cert === '' ? undefined : { cert, key },
    wsPort: v['ws-port'],
    httpPort: v['http-port'],
    wsOrigins: v['ws-origins'],
    ...cluster,
    presenceTtlMs: v['presence-ttl'],
    values,
    raw,
  };
}

const NODE_ID = /^[A-Za-z0-9_.:-]{1,64}$/;

/**
 * --bus and --node-id (CLUSTER.md). A SQLite file is one process's, so a bus
 * beside it would be a cluster whose nodes do not share their data: refused.
 * The node id names Redis keys, so it is kept to a safe character set.
 */
function clusterOptions(bus: string, nodeId: string, store: string): { bus: string | undefined; nodeId: string } {
  const id = nodeId === '' ? `${hostname()}-${process.pid}`.replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 64) : nodeId;
  if (!NODE_ID.test(id)) throw new ConfigError(`--node-id: ${JSON.stringify(nodeId)} is not 1 to 64 letters, digits or _.:-`);
  if (bus === '') return { bus: undefined, nodeId: id };
  if (!isRedisUrl(bus)) throw new ConfigError(`--bus: ${JSON.stringify(redactUrl(bus))} is not a redis://host:port URL`);
  if (!/^postgres(ql)?:\/\//.test(store))
    throw new ConfigError("--bus needs a postgres:// --store: a SQLite store is one process's and cannot be shared by the nodes of a cluster");
  return { bus, nodeId: id };
}

/** What node-redis accepts (it throws a bare "Invalid URL" at start otherwise): redis:// or rediss://, a host, a port if any. */
function isRedisUrl(text: string): boolean {
  if (!/^rediss?:\/\/[^\s]+$/.test(text)) return false;
  try {
    return new URL(text).hostname !== '';
  } catch {
    return false;
  }
}

/** A module's declared option, from the same flags and environment. */
export function resolveModuleOption(raw: RawFlags, flag: string, spec: OptionSpec): unknown {
  const value = rawValue(raw, flag);
  if (value === undefined) return spec.default;
  const text = value === true ? 'true' : value.trim();
  switch (spec.type) {
    case 'boolean':
      if (['true', '1', 'yes', 'on'].includes(text)) return true;
      if (['false', '0', 'no', 'off'].includes(text)) return false;
      throw new ConfigError(`--${flag}: ${JSON.stringify(text)} is not true or false`);
    case 'number': {
      const n = Number(text);
      if (text === '' || !Number.isFinite(n) || n < (spec.min ?? -Infinity)) {
        throw new ConfigError(`--${flag}: ${JSON.stringify(text)} is not a number${spec.min === undefined ? '' : ` >= ${spec.min}`}`);
      }
      return n;
    }
    case 'string':
      if (value === true || text === '') throw new ConfigError(`--${flag} needs a value`);
      return text;
  }
}

/** Flags given on the command line that neither the core nor a module declares. */
export function unknownFlags(raw: RawFlags, known: ReadonlySet<string>): string[] {
  return [...raw.flags.keys()].filter((f) => !known.has(f));
}

export function coreFlagHelp(): string {
  return Object.entries(CORE_FLAGS as Record<string, FlagSpec>)
    .map(([flag, spec]) => `  --${flag.padEnd(24)} ${spec.help} (default ${JSON.stringify(spec.def)})`)
    .join('\n');
}
