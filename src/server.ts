import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { ServerCore } from './core/server-core.ts';
import { CommandError } from './core/errors.ts';
import { ConfigError, unknownFlags, CORE_FLAGS, type ServerOptions } from './config.ts';
import { CORE_MIGRATIONS } from './store/core-data.ts';
import { openStore } from './store/open-store.ts';
import { listenTcp, type TcpListener } from './transport/tcp.ts';
import { startGateways, type Gateways } from './gateway/http.ts';
import { openCluster, type Cluster } from './bus/open-cluster.ts';

export type Server = {
  readonly core: ServerCore;
  readonly port: number;
  readonly host: string;
  /** WebSocket and HTTP listeners, when enabled. */
  readonly wsPort: number | undefined;
  readonly httpPort: number | undefined;
  /** true once listening, false again while draining */
  readonly ready: boolean;
  /** SIGHUP: reloads the modules; false when the reload failed (old set kept). */
  reload(): Promise<boolean>;
  /** Idempotent graceful stop: no new connections, `shutdown` to all, in-flight requests finished, store closed. */
  close(): Promise<void>;
};

const DRAIN_LIMIT_MS = 8000;

export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Opens the store, loads the modules, listens. Throws ConfigError or ModuleLoadError on bad start-up input. */
export async function createServer(options: ServerOptions, log: Logger): Promise<Server> {
  const store = await openStore(options.store, options.data, log);
  let cluster: Cluster | undefined;
  try {
    cluster =
      options.bus === undefined ? undefined : await openCluster({ bus: options.bus, nodeId: options.nodeId, presenceTtlMs: options.presenceTtlMs }, log);
  } catch (err) {
    await store.close();
    throw err;
  }
  const core = new ServerCore(options, store, log, packageVersion(), cluster);
  let tcp: TcpListener;
  let listening: TcpListener | undefined;
  let gateways: Gateways;
  let ready = false;
  try {
    await store.migrate('core', CORE_MIGRATIONS);
    await core.loadModules();
    const known = new Set([...Object.keys(CORE_FLAGS), ...core.moduleFlags()]);
    const unknown = unknownFlags(options.raw, known);
    if (unknown.length > 0) throw new ConfigError(`unknown flag --${unknown[0]}`);
    tcp = listening = await listenTcp(core);
    gateways = await startGateways(core, () => ready && store.up && (cluster === undefined || cluster.bus.up));
  } catch (err) {
    listening?.server.close(); // a gateway port that cannot be had must not leave the TCP port listening
    core.disposeModules();
    await cluster?.close();
    await store.close();
    throw err;
  }
  core.startSweeper();
  ready = true;
  let closing: Promise<void> | undefined;
  log.info({ transport: tcp.transport, host: options.host, port: tcp.port, modules: core.api.modules() }, 'listening');
  for (const l of gateways.listeners) log.info({ transport: l.transport, host: options.host, port: l.port }, 'listening');

  async function close(): Promise<void> {
    ready = false;
    tcp.server.close();
    // this node's users offline for everyone at once (CLUSTER.md rule 4), in one announcement: not
    // after the requests in flight, the HTTP listeners and the modules, each of which may take its time
    const departed = cluster?.depart();
    core.sessions.drain();
    const deadline = Date.now() + DRAIN_LIMIT_MS;
    // connections finish their running requests, HTTP ones included (the HTTP listeners still answer, /readyz with 503)
    while ((core.sessions.size > 0 || gateways.inFlight() > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const session of core.sessions) session.fatal(new CommandError('shutdown'));
    core.stopSweeper();
    await gateways.close();
    core.disposeModules();
    // no more bus traffic, and the inbox's last marks and sweeps, before the store goes: the two
    // wait on different engines (Redis, PostgreSQL), so side by side
    await Promise.all([departed?.then(() => cluster?.close()), core.hub.inbox.close()]);
    await store.close();
    log.info('stopped');
  }

  return {
    core,
    port: tcp.port,
    host: options.host,
    wsPort: gateways.listeners.find((l) => l.transport === 'ws')?.port,
    httpPort: gateways.listeners.find((l) => l.transport === 'http')?.port,
    get ready() {
      return ready;
    },
    reload: () => core.reload(),
    close: () => (closing ??= close()),
  };
}
