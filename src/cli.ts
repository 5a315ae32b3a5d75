#!/usr/bin/env node
/**
 * `npm start -- [flags]`: runs the server until SIGTERM or SIGINT; SIGHUP
 * reloads the modules. Bad flags exit 2 with a one-line message. Logs are
 * JSON lines on stdout; people get one line on stderr saying where it listens.
 */
import { ConfigError, coreFlagHelp, envName, parseArgv, resolveOptions, type ServerOptions } from './config.ts';
import { abandonLog, createLogger, releaseLog } from './log.ts';
import { createServer, packageVersion, type Server } from './server.ts';
import { loadModules, ModuleLoadError } from './core/module-loader.ts';

/** The exit promise of the README: a stop signal ends the process within this. */
const EXIT_LIMIT_MS = 10_000;

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  // a closed stderr (the reader went away) must not become an uncaught exception
  process.stderr.on('error', () => {});
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(await helpText(argv));
    return;
  }
  let options;
  try {
    options = resolveOptions(argv, process.env);
  } catch (err) {
    return exitWith(2, err);
  }
  // in a cluster every line names its node (CLUSTER.md: --node-id names the node in logs), so merged logs tell the nodes apart
  const log = options.bus === undefined ? createLogger(options.logLevel) : createLogger(options.logLevel).child({ node: options.nodeId });
  // Signals are handled from the start: before a handler is installed the
  // default action kills the process at once, so a stop that arrives while
  // the server is starting waits for the start and then stops it cleanly.
  let server: Server | undefined;
  let stopping = false;
  let requested: string | undefined;
  const stop = (signal: string) => {
    if (stopping || requested !== undefined) {
      // a second signal (also while a start hangs): the person wants out now
      abandonLog(log);
      process.exit(1);
    }
    if (server === undefined) {
      requested = signal;
      log.info({ signal }, 'stop requested while starting: stopping once started');
      // a start that hangs (a database that never answers) must not keep the process past the limit either
      setTimeout(() => (abandonLog(log), process.exit(1)), EXIT_LIMIT_MS).unref();
      return;
    }
    stopping = true;
    log.info({ signal }, 'shutting down');
    // nothing below may keep the process past the limit, not even a stdout nobody reads
    setTimeout(() => (abandonLog(log), process.exit(1)), EXIT_LIMIT_MS);
    server.close().then(
      () => releaseLog(log, 1000).then(() => process.exit(0)),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        return releaseLog(log, 1000).then(() => process.exit(1));
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // SIGHUP's default action kills the process too: one that arrives while starting is kept
  // for after the start (modules.txt may have changed after the start read it); reloads
  // themselves run one at a time (the module set queues them)
  let reloadAsked = false;
  const reload = () => {
    if (server === undefined) reloadAsked = true;
    else if (!stopping) void server.reload();
  };
  process.on('SIGHUP', reload);
  try {
    server = await createServer(options, log);
  } catch (err) {
    // a bad flag (a module's too) is a usage error (2); a module that fails to load, or anything else, is 1
    const code = err instanceof ConfigError || (err instanceof ModuleLoadError && err.usage) ? 2 : 1;
    exitWith(code, err);
    // exits now: what the failed start left open (node-postgres keeps the socket of a connection
    // whose authentication failed on its side) must not keep the process running
    return void releaseLog(log, 1000).then(() => process.exit(code));
  }
  process.stderr.write(`${startupLine(options, server)}\n`);
  if (requested !== undefined) {
    const signal = requested;
    requested = undefined;
    return stop(signal);
  }
  if (reloadAsked) reload();
  process.on('uncaughtException', (err) => log.error({ err }, 'uncaught exception'));
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));
}

/** The one line for people: where to connect, and with --ws-port where to point a browser. */
export function startupLine(options: ServerOptions, server: Server): string {
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  // a wildcard address is not one a browser can open
  const browserHost = ['0.0.0.0', '::', '[::]'].includes(options.host) || options.host === '' ? 'localhost' : host;
  const secure = options.tls !== undefined;
  const where = [`${host}:${server.port} (${secure ? 'TLS' : 'TCP'})`];
  if (server.wsPort !== undefined) where.push(`${host}:${server.wsPort} (WebSocket${server.httpPort === server.wsPort ? ', HTTP' : ''})`);
  if (server.httpPort !== undefined && server.httpPort !== server.wsPort) where.push(`${host}:${server.httpPort} (HTTP)`);
  const browser =
    server.wsPort !== undefined && server.httpPort !== undefined ? `; open ${secure ? 'https' : 'http'}://${browserHost}:${server.httpPort}/ in a browser` : '';
  return `textserver ${packageVersion()} listening on ${where.join(', ')}${browser}. Logs are JSON lines on stdout; Ctrl-C stops.`;
}

/** Core flags, then the flags the listed modules declare (they are imported to read them, not started). */
async function helpText(argv: readonly string[]): Promise<string> {
  const head = 'usage: npm start -- [flags]\n\n';
  const tail = '\n\nEvery flag also reads TEXTSERVER_<FLAG> (e.g. TEXTSERVER_PORT); flags win.\n';
  let flags: Map<string, string | true>;
  try {
    flags = parseArgv(argv.filter((a) => a !== '--help' && a !== '-h'));
  } catch {
    flags = new Map();
  }
  const pick = (flag: string, def: string) => {
    const v = flags.get(flag) ?? process.env[envName(flag)];
    return typeof v === 'string' && v !== '' ? v : def;
  };
  const list = pick('modules-list', 'modules.txt');
  let modules: string;
  try {
    const lines = (await loadModules(list, pick('modules-dir', 'modules'), 0)).flatMap((m) =>
      Object.entries(m.def.options ?? {}).map(
        ([flag, spec]) => `  --${flag.padEnd(24)} (${m.name}) ${spec.description} (default ${JSON.stringify(spec.default)})`,
      ),
    );
    modules = lines.length === 0 ? `The modules in ${list} declare no flags.` : `Flags of the modules in ${list}:\n${lines.join('\n')}`;
  } catch (err) {
    modules = `(the modules' own flags are not listed: ${(err as Error).message})`;
  }
  return `${head}${coreFlagHelp()}\n\n${modules}${tail}`;
}

function exitWith(code: number, err: unknown): void {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`textserver: ${message}\n`);
  process.exitCode = code;
}

if (import.meta.main) void main();
