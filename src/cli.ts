#!/usr/bin/env node
/**
 * `npm start -- [flags]`: runs the server until SIGTERM or SIGINT; SIGHUP
 * reloads the modules. Bad flags exit 2 with a one-line message.
 */
import { ConfigError, coreFlagHelp, resolveOptions } from './config.ts';
import { createLogger } from './log.ts';
import { createServer } from './server.ts';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`usage: npm start -- [flags]\n\n${coreFlagHelp()}\n\nEvery flag also reads TEXTSERVER_<FLAG> (e.g. TEXTSERVER_PORT); flags win.\n`);
    return;
  }
  let options;
  try {
    options = resolveOptions(argv, process.env);
  } catch (err) {
    return exitWith(2, err);
  }
  const log = createLogger(options.logLevel);
  let server;
  try {
    server = await createServer(options, log);
  } catch (err) {
    // a bad flag is a usage error (2); a module that fails to load, or anything else, is 1
    return exitWith(err instanceof ConfigError ? 2 : 1, err);
  }
  const stop = (signal: string) => {
    log.info({ signal }, 'shutting down');
    const timer = setTimeout(() => process.exit(1), 10_000);
    timer.unref();
    server.close().then(
      () => {
        log.flush?.();
        setImmediate(() => process.exit(0));
      },
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => void server.reload());
  process.on('uncaughtException', (err) => log.error({ err }, 'uncaught exception'));
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));
}

function exitWith(code: number, err: unknown): void {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`textserver: ${message}\n`);
  process.exitCode = code;
}

void main();
