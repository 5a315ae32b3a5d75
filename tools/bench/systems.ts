/** The systems under test, each a separate process on 127.0.0.1: textserver, the minimal framed server, Redis. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import net from 'node:net';

export const ROOT = resolve(import.meta.dirname, '../..');

/**
 * The environment `npm start` gives the server: glibc returns argon2's 19 MiB
 * buffers to the system at once instead of keeping one per thread arena, and
 * keeps up to 4 MiB free at the top of the heap instead of 128 KiB (see the
 * README's flags section: SQLite's per-transaction allocations).
 */
export const SERVER_ENV = { ...process.env, MALLOC_MMAP_THRESHOLD_: '1048576', MALLOC_TRIM_THRESHOLD_: '4194304' };

export type System = {
  readonly name: string;
  readonly port: number;
  readonly pid: number;
  /** textserver's WebSocket port, when started with --ws-port. */
  readonly wsPort?: number;
  /** Where receivers connect when not to `port` (a cluster: senders on one node, receivers on another). */
  readonly receiverPort?: number;
  /** Every server process whose CPU and RSS count, when more than `pid` (the nodes of a cluster). */
  readonly pids?: readonly number[];
  stop(): Promise<void>;
};

const CLK_TCK = 100;

/** CPU seconds the process has used so far (user + system). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

/** CPU seconds of all the system's processes. */
export function systemCpuSeconds(system: System): number {
  return (system.pids ?? [system.pid]).reduce((sum, pid) => sum + cpuSeconds(pid), 0);
}

/** RSS of all the system's processes. */
export function systemRssBytes(system: System): number {
  return (system.pids ?? [system.pid]).reduce((sum, pid) => sum + rssBytes(pid), 0);
}

function waitListening(proc: ChildProcess, what: string, onLine?: (line: string) => void): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const lines: string[] = [];
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      lines.push(line);
      onLine?.(line);
      if (line.includes('"msg":"listening"') && !line.includes('"transport":"ws"') && !line.includes('"transport":"http"')) {
        setTimeout(() => resolvePort((JSON.parse(line) as { port: number }).port), 50); // the gateway lines follow at once
      }
    });
    proc.on('exit', (code) => reject(new Error(`${what} exited with ${code}: ${lines.slice(-5).join('\n')}`)));
  });
}

function stopper(proc: ChildProcess, cleanup?: () => void): () => Promise<void> {
  return () =>
    new Promise((done) => {
      // a process killed on purpose (SIGKILL) has a signalCode and no exitCode, and has already emitted 'exit'
      if (proc.exitCode !== null || proc.signalCode !== null) {
        cleanup?.();
        return done();
      }
      proc.once('exit', () => {
        cleanup?.();
        done();
      });
      proc.kill('SIGTERM');
      setTimeout(() => proc.kill('SIGKILL'), 12_000).unref();
    });
}

export type TextserverOptions = { data?: string; args?: string[]; fastHash?: boolean };

export async function startTextserver(options: TextserverOptions = {}): Promise<System & { data: string }> {
  const data = options.data ?? mkdtempSync(join(tmpdir(), 'textserver-bench-'));
  // a benchmark drives one user far past any chat's rate on purpose: the per-user budgets are off
  const args = [
    '--disable-warning=ExperimentalWarning',
    join(ROOT, 'src/cli.ts'),
    '--port',
    '0',
    '--data',
    data,
    '--log-level',
    'info',
    '--max-connections',
    '30000',
    '--max-connections-per-ip',
    '30000',
    '--idle-timeout',
    '3600',
    '--user-rate',
    '0',
    '--user-bytes',
    '0',
  ];
  if (options.fastHash) args.push('--argon2-memory-kib', '256', '--argon2-time', '1');
  args.push(...(options.args ?? []));
  const proc = spawn(process.execPath, args, { cwd: ROOT, env: SERVER_ENV, stdio: ['ignore', 'pipe', 'inherit'] });
  let wsPort: number | undefined;
  const port = await waitListening(proc, 'textserver', (line) => {
    if (line.includes('"transport":"ws"')) wsPort = (JSON.parse(line) as { port: number }).port;
  });
  return {
    name: 'textserver',
    port,
    wsPort,
    pid: proc.pid!,
    data,
    stop: stopper(proc, options.data ? undefined : () => rmSync(data, { recursive: true, force: true })),
  };
}

export async function startMinServer(relay: boolean): Promise<System> {
  const args = ['--disable-warning=ExperimentalWarning', join(ROOT, 'tools/min-server.ts'), '--port', '0'];
  if (relay) args.push('--relay');
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await waitListening(proc, 'min-server');
  return { name: relay ? 'min-relay' : 'min-server', port, pid: proc.pid!, stop: stopper(proc) };
}

export function redisAvailable(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** A port nothing listens on right now (for servers that must come back on the same port). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((r) => server.close(r));
  return port;
}

export async function startRedis(): Promise<System> {
  const port = await freePort();
  const proc = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--maxclients', '30000', '--protected-mode', 'no'],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise<void>((ready, reject) => {
    createInterface({ input: proc.stdout! }).on('line', (line) => line.includes('Ready to accept connections') && ready());
    proc.on('exit', (code) => reject(new Error(`redis-server exited with ${code}`)));
  });
  return { name: 'redis', port, pid: proc.pid!, stop: stopper(proc) };
}
