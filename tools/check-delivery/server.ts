/**
 * The server under test as a child process on 127.0.0.1: started on a free
 * port, killed with SIGKILL and started again on the same port and the same
 * --data (and --store), so clients reconnect to where it was. With
 * `--cluster` the checker runs three of these as nodes of one cluster.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const ROOT = join(import.meta.dirname, '../..');
/** Lines kept from the server's output, to show when it fails to start. */
const KEEP_LINES = 40;

export type ServerSpec = {
  data: string;
  store: string | undefined;
  inboxRetain: number;
  /** More flags (a cluster node's --bus, --node-id, --presence-ttl). */
  extraArgs?: readonly string[];
  /** How reports name it (`node n2`); `the server` by default. */
  name?: string;
};

export class ServerProcess {
  readonly spec: ServerSpec;
  port = 0;
  kills = 0;
  /** Milliseconds from each spawn to its `listening` line. */
  readonly startMs: number[] = [];
  /** Exits nobody asked for (a crash of the server): how it ended and its last lines. It is started again each time. */
  readonly crashes: string[] = [];
  #proc: ChildProcess | undefined;
  /** A kill or a stop is under way: the exit that follows is expected. */
  #ending = false;
  #exited: Promise<void> = Promise.resolve();
  readonly lines: string[] = [];

  constructor(spec: ServerSpec) {
    this.spec = spec;
  }

  /** Starts it (on a free port the first time, on the same port after), and resolves once it listens. */
  async start(): Promise<void> {
    let lastError: Error | undefined;
    // the port was free a moment ago; if something took it meanwhile, try a few times before giving up
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        this.port = await this.#spawn();
        return;
      } catch (err) {
        lastError = err as Error;
        if (this.port === 0) break;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    throw lastError!;
  }

  /** SIGKILL: no shutdown, no flush; resolves once the process is gone. */
  async kill(): Promise<void> {
    this.kills++;
    this.#ending = true;
    this.#proc?.kill('SIGKILL');
    await this.#exited;
  }

  async stop(): Promise<void> {
    this.#ending = true;
    this.#proc?.kill('SIGTERM');
    await this.#exited;
  }

  #spawn(): Promise<number> {
    const args = [
      '--disable-warning=ExperimentalWarning',
      join(ROOT, 'src/cli.ts'),
      ...['--host', '127.0.0.1', '--port', String(this.port), '--data', this.spec.data, '--log-level', 'info'],
      // cheap hashing: the checker is about delivery, not passwords
      ...['--argon2-memory-kib', '256', '--argon2-time', '1'],
      // bots far above a person's rate, from one address
      ...['--user-rate', '0', '--user-bytes', '0', '--max-connections-per-ip', '100000'],
      // keep every entry, so the final read from 0 sees the whole run
      ...['--inbox-retain', String(this.spec.inboxRetain)],
      ...(this.spec.store === undefined ? [] : ['--store', this.spec.store]),
      ...(this.spec.extraArgs ?? []),
    ];
    const spawnedAt = Date.now();
    const proc = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, MALLOC_MMAP_THRESHOLD_: '1048576' }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.#proc = proc;
    this.#ending = false;
    this.#exited = new Promise((r) => proc.once('exit', () => r()));
    let listening = false;
    proc.once('exit', (code, signal) => {
      if (this.#ending || !listening) return;
      this.crashes.push(`${this.spec.name ?? 'the server'}: exit ${signal ?? code}; its last lines:\n${this.lines.join('\n')}`);
      // started again, so the run (and the final read) can go on; the crash itself fails the check
      setTimeout(() => void this.start().catch(() => {}), 100);
    });
    return new Promise((resolve, reject) => {
      const keep = (line: string) => {
        this.lines.push(line);
        if (this.lines.length > KEEP_LINES) this.lines.shift();
      };
      createInterface({ input: proc.stderr! }).on('line', keep);
      createInterface({ input: proc.stdout! }).on('line', (line) => {
        keep(line);
        if (line.includes('"msg":"listening"')) {
          listening = true;
          this.startMs.push(Date.now() - spawnedAt);
          resolve((JSON.parse(line) as { port: number }).port);
        }
      });
      proc.once('exit', (code, signal) => reject(new Error(`${this.spec.name ?? 'the server'} exited (${signal ?? code}) before listening:\n${this.lines.join('\n')}`)));
    });
  }
}
