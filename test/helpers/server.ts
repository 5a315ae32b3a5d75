/** Real servers for integration tests: in-process on 127.0.0.1:0, or as a child process. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createHash } from 'node:crypto';
import { inject } from 'vitest';
import { resolveOptions } from '../../src/config.ts';
import { createLogger } from '../../src/log.ts';
import { createServer, type Server } from '../../src/server.ts';

export const ROOT = resolve(import.meta.dirname, '../..');

/**
 * Cheap argon2 parameters through the documented flags, so tests do not spend
 * their time hashing; the defaults stay OWASP's.
 */
export const FAST_HASH = ['--argon2-memory-kib', '256', '--argon2-time', '1'];

export function tempDir(prefix = 'textserver-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export type TestServer = { server: Server; port: number; data: string; stop(): Promise<void> };

/** The throwaway PostgreSQL of the `postgres` test project (vitest.config.ts), when this run has one. */
export function testPostgres(): string | undefined {
  return inject('postgresUrl');
}

/**
 * In the `postgres` project, a server's store is a database of its own on
 * the throwaway cluster, named after its data directory, so a test that
 * restarts a server on the same `--data` finds its data again.
 */
export async function storeArgs(data: string | undefined): Promise<string[]> {
  const base = testPostgres();
  if (base === undefined || data === undefined) return [];
  const { createDatabase } = await import('../../tools/postgres.ts');
  return ['--store', await createDatabase(base, `t_${createHash('sha1').update(data).digest('hex').slice(0, 20)}`)];
}

export async function startServer(args: string[] = [], data = tempDir()): Promise<TestServer> {
  const store = args.includes('--store') ? [] : await storeArgs(data);
  const options = resolveOptions(['--port', '0', '--data', data, '--log-level', 'silent', ...FAST_HASH, ...store, ...args], {});
  if (!args.includes('--modules-list')) options.modulesList = join(ROOT, 'modules.txt');
  if (!args.includes('--modules-dir')) options.modulesDir = join(ROOT, 'modules');
  const server = await createServer(options, createLogger('silent'));
  return {
    server,
    port: server.port,
    data,
    async stop() {
      await server.close();
    },
  };
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export type ChildServer = {
  proc: ChildProcess;
  port: number;
  lines: string[];
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
};

/** Node 24 (this process's own binary) running src/cli.ts. */
export function nodeArgs(script: string, args: string[]): [string, string[]] {
  return [process.execPath, ['--disable-warning=ExperimentalWarning', join(ROOT, script), ...args]];
}

export function spawnServerRaw(args: string[], env: Record<string, string> = {}): Omit<ChildServer, 'port'> {
  const [cmd, argv] = nodeArgs('src/cli.ts', args);
  const proc = spawn(cmd, argv, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve(line: string): void }[] = [];
  const onLine = (line: string) => {
    lines.push(line);
    for (const w of [...waiters]) {
      if (w.pattern.test(line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  };
  createInterface({ input: proc.stdout! }).on('line', onLine);
  createInterface({ input: proc.stderr! }).on('line', onLine);
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  return {
    proc,
    lines,
    exited,
    waitForLine(pattern, timeoutMs = 15_000) {
      const seen = lines.find((l) => pattern.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no line matching ${pattern} in:\n${lines.join('\n')}`)), timeoutMs);
        waiters.push({ pattern, resolve: (l) => (clearTimeout(timer), resolve(l)) });
      });
    },
  };
}

/** Starts `npm start`'s entry point as a child process and waits for its "listening" line. */
export async function spawnServer(args: string[], env: Record<string, string> = {}): Promise<ChildServer> {
  const data = args.includes('--data') ? args[args.indexOf('--data') + 1] : undefined;
  const store = args.includes('--store') ? [] : await storeArgs(data);
  const child = spawnServerRaw(['--port', '0', ...FAST_HASH, ...store, ...args], env);
  const line = await Promise.race([
    child.waitForLine(/"msg":"listening"/),
    child.exited.then((code) => Promise.reject(new Error(`server exited with ${code}:\n${child.lines.join('\n')}`))),
  ]);
  return { ...child, port: (JSON.parse(line) as { port: number }).port };
}
