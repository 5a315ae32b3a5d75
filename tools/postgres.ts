/**
 * A throwaway PostgreSQL for tests: Debian's `postgresql` binaries
 * (/usr/lib/postgresql/<version>/bin), a cluster in a temporary directory,
 * a free port on 127.0.0.1, torn down after. As root, the cluster runs as
 * the `postgres` user (PostgreSQL refuses to run as root).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from './bench/systems.ts';

export type Postgres = {
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** Stops the server (fast shutdown) and removes its directory. */
  stop(): Promise<void>;
  /** Stops (fast shutdown) and starts it again on the same port. */
  restart(): Promise<void>;
  /**
   * Takes the server away without removing anything: SIGINT (the default) is
   * PostgreSQL's fast shutdown (pg_ctl stop -m fast), SIGQUIT its immediate
   * one (-m immediate: no checkpoint, crash recovery at the next start).
   */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again after `kill()`, on the same port. */
  start(): Promise<void>;
  /** Freezes the server and its backends (SIGSTOP): connections stay open and answer nothing, as behind a lost network. */
  pause(): void;
  /** Lets a paused server go on (SIGCONT). */
  resume(): void;
};

/** The directory holding initdb and pg_ctl, or undefined when PostgreSQL is not installed. */
export function postgresBin(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length === 0 ? undefined : join(root, versions[0]!, 'bin');
}

const asRoot = process.getuid?.() === 0;

/** As root, PostgreSQL's programs run as the postgres user. */
function owner(): { uid?: number; gid?: number } {
  return asRoot ? idOf('postgres') : {};
}

function run(bin: string, args: string[]): void {
  execFileSync(bin, args, { stdio: 'pipe', ...owner() });
}

/**
 * `durable`: fsync on, as in production (the bench); tests run with fsync off, which survives process kills.
 * `password`: TCP connections must give it (SCRAM), as on an operator's server; `url` carries it.
 */
export async function startPostgres(options: { durable?: boolean; password?: string } = {}): Promise<Postgres> {
  const bin = postgresBin();
  if (bin === undefined) throw new Error('PostgreSQL is not installed (Debian package postgresql)');
  const dir = mkdtempSync(join(tmpdir(), 'textserver-pg-'));
  if (asRoot) chownSync(dir, owner().uid!, owner().gid!);
  chmodSync(dir, 0o700);
  const data = join(dir, 'data');
  let auth = ['--auth=trust'];
  if (options.password !== undefined) {
    const pwfile = join(dir, 'pwfile');
    writeFileSync(pwfile, `${options.password}\n`);
    if (asRoot) chownSync(pwfile, owner().uid!, owner().gid!);
    auth = ['--auth-local=trust', '--auth-host=scram-sha-256', `--pwfile=${pwfile}`];
  }
  run(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', ...auth, '-E', 'UTF8', '--no-sync', '--locale=C']);
  const port = await freePort();
  const url = `postgres://postgres${options.password === undefined ? '' : `:${encodeURIComponent(options.password)}`}@127.0.0.1:${port}/postgres`;
  let proc: ChildProcess | undefined;
  const start = async () => {
    const sync = options.durable === true ? ['-c', 'fsync=on'] : ['-c', 'fsync=off', '-c', 'full_page_writes=off'];
    const args = ['-D', data, '-p', String(port), '-h', '127.0.0.1', '-k', dir, ...sync, '-c', 'max_connections=400', '-c', 'shared_buffers=64MB'];
    proc = spawn(join(bin, 'postgres'), args, { stdio: 'ignore', ...owner() });
    await waitReady(url);
  };
  const stopWith = async (signal: NodeJS.Signals) => {
    const p = proc;
    if (p === undefined || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill(signal);
    await exited;
    proc = undefined;
  };
  /** The postmaster first (it forks no more backends), then its children. */
  const signalAll = (signal: NodeJS.Signals) => {
    const pid = proc?.pid;
    if (pid === undefined) return;
    let children: number[] = [];
    try {
      children = execFileSync('pgrep', ['-P', String(pid)]).toString().trim().split('\n').filter(Boolean).map(Number);
    } catch {
      // pgrep exits 1 when there is none
    }
    for (const p of [pid, ...children]) {
      try {
        process.kill(p, signal);
      } catch {
        // gone meanwhile
      }
    }
  };
  await start();
  return {
    url,
    pause: () => signalAll('SIGSTOP'),
    resume: () => signalAll('SIGCONT'),
    port,
    dir,
    restart: async () => {
      await stopWith('SIGINT');
      await start();
    },
    kill: (signal = 'SIGINT') => stopWith(signal),
    start: async () => {
      if (proc === undefined) await start();
    },
    stop: async () => {
      await stopWith('SIGINT');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function idOf(user: string): { uid: number; gid: number } {
  return { uid: Number(execFileSync('id', ['-u', user]).toString()), gid: Number(execFileSync('id', ['-g', user]).toString()) };
}

async function waitReady(url: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const client = new pg.Client({ connectionString: url });
    try {
      await client.connect();
      await client.end();
      return;
    } catch {
      await client.end().catch(() => {});
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`PostgreSQL did not start at ${url}`);
}

/** A fresh database on the cluster, so tests never see each other's data. */
export async function createDatabase(url: string, name: string): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (exists.rowCount === 0) await client.query(`CREATE DATABASE "${name.replace(/"/g, '')}" STRATEGY FILE_COPY`);
  } finally {
    await client.end();
  }
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}
