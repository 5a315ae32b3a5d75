/**
 * A throwaway Redis for tests: Debian's `redis-server` binary, its files in a
 * temporary directory, a free port on 127.0.0.1, torn down after. Like
 * tools/postgres.ts for PostgreSQL. `kill()` and `restart()` keep the port,
 * so the fault tests can take Redis away and bring it back where the nodes
 * are already pointed; without `persist` a restart starts empty, as a Redis
 * without persistence does (the bus and presence must survive that).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { freePort } from './bench/systems.ts';

export type Redis = {
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** Stops the server (SIGTERM) and removes its directory. */
  stop(): Promise<void>;
  /** Stops and starts it again on the same port. */
  restart(): Promise<void>;
  /** Takes the server away (SIGKILL by default) without removing anything; `start()` brings it back. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again after `kill()`, on the same port. */
  start(): Promise<void>;
  /** Freezes the server (SIGSTOP): its connections stay open and answer nothing, as behind a lost network. */
  pause(): void;
  /** Lets a paused server go on (SIGCONT). */
  resume(): void;
};

/** The redis-server program, or undefined when the Debian package redis-server is not installed. */
export function redisBin(): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/sbin']) {
    if (dir === '') continue;
    const bin = join(dir, 'redis-server');
    if (existsSync(bin)) return bin;
  }
  return undefined;
}

/** `persist`: an append-only file in the directory, so a restart keeps the keys. */
export async function startRedis(options: { persist?: boolean } = {}): Promise<Redis> {
  const bin = redisBin();
  if (bin === undefined) throw new Error('redis-server is not installed (Debian package redis-server)');
  const dir = mkdtempSync(join(tmpdir(), 'textserver-redis-'));
  const port = await freePort();
  let proc: ChildProcess | undefined;
  const start = async () => {
    if (proc !== undefined && proc.exitCode === null && proc.signalCode === null) return;
    const persistence = options.persist === true ? ['--appendonly', 'yes', '--appendfsync', 'no'] : ['--appendonly', 'no'];
    const args = [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--save',
      '',
      ...persistence,
      '--protected-mode',
      'no',
      '--maxclients',
      '10000',
      '--logfile',
      '',
    ];
    const p = spawn(bin, args, { stdio: 'ignore' });
    proc = p;
    let exited = false;
    p.once('exit', () => (exited = true));
    await waitReady(port, () => exited);
  };
  const stopWith = async (signal: NodeJS.Signals) => {
    const p = proc;
    proc = undefined;
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill(signal);
    await exited;
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    start,
    kill: (signal = 'SIGKILL') => stopWith(signal),
    pause: () => void proc?.kill('SIGSTOP'),
    resume: () => void proc?.kill('SIGCONT'),
    restart: async () => {
      await stopWith('SIGTERM');
      await start();
    },
    stop: async () => {
      await stopWith('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Waits until the server answers PING (a bare RESP exchange: the tool needs no client library). */
async function waitReady(port: number, exited: () => boolean): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (exited()) throw new Error(`redis-server exited at start (port ${port})`);
    if (await pings(port)) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`redis-server did not start on port ${port}`);
}

function pings(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let reply = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (d) => {
      reply += d.toString();
      // "-LOADING ..." while it reads its files: not ready yet
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}
