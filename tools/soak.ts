#!/usr/bin/env node
/**
 * Soak test (`npm run soak -- [--seconds N] [--clients N]`): many clients
 * register, log in, send, drop their connections abruptly and come back,
 * against a server process on 127.0.0.1. At the end every user logs in once
 * more to collect what was stored, and the script checks that every `send`
 * the server acknowledged was delivered or stored. Reports server RSS at the
 * start and end and the error counts. Bounded in time and connections.
 *
 * `--attacks all` (or a comma list from soak-attacks.ts) adds the attack mix
 * of issue 11 among that traffic, with HTTP and WebSocket on (`--tls` serves
 * everything over TLS), and reports what each attack saw, the round-trip
 * times of a `nop` prober and the server's RSS meanwhile.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { execFileSync } from 'node:child_process';
import { connect, ReplyError, type ConnectOptions, type TextClient } from '../src/client/client.ts';
import { SERVER_ENV } from './bench/systems.ts';
import { ATTACKS, prepare, run as runAttacks, type Attack, type Counts, type Target } from './soak-attacks.ts';
import { startProber } from './soak-prober.ts';

/** `attacks` undefined: the plain soak; [] (`--attacks none`): the attack set-up and prober without attacks, for comparison. */
type Flags = { seconds: number; clients: number; fastHash: boolean; rssGrowthMb: number; serverHeapMb: number; attacks: Attack[] | undefined; tls: boolean };

function parseFlags(argv: string[]): Flags {
  const flags: Flags = { seconds: 300, clients: 100, fastHash: false, rssGrowthMb: 64, serverHeapMb: 96, attacks: undefined, tls: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--seconds') flags.seconds = Number(argv[++i]);
    else if (a === '--clients') flags.clients = Math.min(2000, Number(argv[++i]));
    else if (a === '--fast-hash') flags.fastHash = true;
    else if (a === '--rss-growth-mb') flags.rssGrowthMb = Number(argv[++i]);
    else if (a === '--server-heap-mb') flags.serverHeapMb = Number(argv[++i]);
    else if (a === '--attacks') flags.attacks = parseAttacks(argv[++i] ?? '');
    else if (a === '--tls') flags.tls = true;
    else throw new Error(`unknown flag ${a}`);
  }
  if (!(flags.seconds > 0 && flags.clients > 1)) throw new Error('--seconds and --clients must be positive');
  return flags;
}

function parseAttacks(list: string): Attack[] {
  if (list === 'all') return [...ATTACKS];
  if (list === 'none') return [];
  const names = list.split(',').filter((n) => n !== '');
  const unknown = names.find((n) => !(ATTACKS as readonly string[]).includes(n));
  if (unknown !== undefined || names.length === 0) throw new Error(`--attacks takes all, none or a list of ${ATTACKS.join(', ')}`);
  return names as Attack[];
}

const PW = 'soak-password';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The server's V8 old space is capped (--server-heap-mb, 0 for Node's default):
 * uncapped, V8 lets the heap grow lazily towards its default limit before it
 * collects hard, which looks like growth but is not a leak. Capped, a leak
 * shows as growth (or a crash), and the RSS figures mean something.
 */
async function startServer(
  flags: Flags,
): Promise<{ port: number; webPort: number | undefined; pid: number; stop(): Promise<void>; data: string; logLines: Map<string, number> }> {
  const data = mkdtempSync(join(tmpdir(), 'textserver-soak-'));
  const heapMb = flags.serverHeapMb;
  const args = [
    ...(heapMb > 0 ? [`--max-old-space-size=${heapMb}`] : []),
    '--disable-warning=ExperimentalWarning',
    join(import.meta.dirname, '../src/cli.ts'),
    '--port',
    '0',
    '--data',
    data,
    '--log-level',
    'info',
    '--mailbox-size',
    '1000000',
  ];
  if (flags.fastHash) args.push('--argon2-memory-kib', '1024', '--argon2-time', '1');
  // the normal users are bots in a closed loop, with few clients far above a person's rate: their request
  // budget is raised (the byte budget, which stops the attack mix's flooder, stays as it is)
  args.push('--user-rate', '10000', '--user-rate-burst', '10000');
  // the attack mix wants HTTP and WebSocket, and per-address limits an attack from one address can reach
  args.push('--max-connections-per-ip', flags.attacks !== undefined ? '1000' : '100000');
  if (flags.attacks !== undefined) args.push('--ws-port', '0');
  if (flags.tls) {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        join(data, 'key.pem'),
        '-out',
        join(data, 'cert.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
      ],
      { stdio: 'ignore' },
    );
    args.push('--tls-cert', join(data, 'cert.pem'), '--tls-key', join(data, 'key.pem'));
  }
  const proc = spawn(process.execPath, args, { env: SERVER_ENV, stdio: ['ignore', 'pipe', 'inherit'] });
  // log lines by message, for the report (a refusal or a failed login logged at a bounded rate)
  const logLines = new Map<string, number>();
  let webPort: number | undefined;
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: proc.stdout }).on('line', (line) => {
      const msg = /"msg":"([^"]*)"/.exec(line)?.[1] ?? '?';
      logLines.set(msg, (logLines.get(msg) ?? 0) + 1);
      if (line.includes('"msg":"listening"') && line.includes('"transport":"ws"')) webPort = (JSON.parse(line) as { port: number }).port;
      else if (line.includes('"msg":"listening"')) setTimeout(() => resolve((JSON.parse(line) as { port: number }).port), 100); // the gateway's line follows
    });
    proc.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  return {
    port,
    get webPort() {
      return webPort;
    },
    pid: proc.pid!,
    data,
    logLines,
    stop: () => new Promise<void>((r) => (proc.on('exit', () => r()), proc.kill('SIGTERM'))),
  };
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

type Stats = {
  acked: Map<string, { to: string; at: number }>;
  resets: Map<string, number[]>;
  received: Map<string, number>;
  errors: Map<string, number>;
  abrupt: number;
  reconnects: number;
};

/** One virtual user: log in, chat, drop the connection now and then, come back. */
async function runUser(i: number, users: string[], dial: ConnectOptions, until: number, stats: Stats): Promise<void> {
  const me = users[i]!;
  let seq = 0;
  while (Date.now() < until) {
    let client: TextClient;
    try {
      client = await connect(dial);
      // listen before logging in: stored messages follow the login's ok in the same read
      client.on('push', (f) => f[0] === 'send' && f[2] === 'soak' && stats.received.set(f[3]!, (stats.received.get(f[3]!) ?? 0) + 1));
      await client.call('login', me, PW);
    } catch (err) {
      count(stats.errors, err instanceof ReplyError ? err.type : 'connect');
      await sleep(50);
      continue;
    }
    const sessionEnd = Math.min(until, Date.now() + 200 + Math.random() * 2000);
    while (Date.now() < sessionEnd && client.connected) {
      const to = users[Math.floor(Math.random() * users.length)]!;
      const id = `${me}:${seq++}`;
      try {
        await client.call('send', to, 'soak', id);
        stats.acked.set(id, { to, at: Date.now() });
      } catch (err) {
        count(stats.errors, err instanceof ReplyError ? err.type : 'closed');
      }
      if (Math.random() < 0.3) await sleep(Math.random() * 20);
    }
    stats.reconnects++;
    if (Math.random() < 0.5) {
      stats.abrupt++;
      client.destroy();
      stats.resets.set(me, [...(stats.resets.get(me) ?? []), Date.now()]);
    } else {
      await client.close();
    }
    await sleep(Math.random() * 100);
  }
}

function count(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

/** Logs each user in once more and collects the stored messages. */
async function drain(users: string[], dial: ConnectOptions, stats: Stats): Promise<void> {
  for (const user of users) {
    const client = await connect(dial);
    client.on('push', (f) => f[0] === 'send' && f[2] === 'soak' && stats.received.set(f[3]!, (stats.received.get(f[3]!) ?? 0) + 1));
    await client.call('login', user, PW);
    await client.call('nop');
    await client.close();
  }
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2));
  const server = await startServer(flags);
  const dial: ConnectOptions = { port: server.port, ...(flags.tls ? { tls: { insecure: true } } : {}) };
  const users = Array.from({ length: flags.clients }, (_, i) => `soak${i}`);
  const setup = await connect(dial);
  for (const u of users) await setup.call('register', u, PW);
  await setup.close();
  const stats: Stats = { acked: new Map(), resets: new Map(), received: new Map(), errors: new Map(), abrupt: 0, reconnects: 0 };
  const target: Target = { port: server.port, webPort: server.webPort, tls: flags.tls };
  const attacks = flags.attacks ?? [];
  if (attacks.length > 0) await prepare(target, attacks);
  const until = Date.now() + flags.seconds * 1000;
  const rssStart = rssMb(server.pid);
  const samples: number[] = [];
  const progress = setInterval(() => {
    samples.push(rssMb(server.pid));
    const left = Math.max(0, Math.round((until - Date.now()) / 1000));
    const line = `soak: ${stats.acked.size} sends acknowledged, ${stats.reconnects} reconnects, RSS ${samples.at(-1)!.toFixed(1)} MB, ${left}s left`;
    if (process.stderr.isTTY) process.stderr.write(`\r${line}   `);
    else if (samples.length % 10 === 0) process.stderr.write(`${line}\n`);
  }, 1000);
  const attackCounts: Counts = new Map();
  const prober = flags.attacks !== undefined ? await startProber(dial) : undefined;
  await Promise.all([...users.map((_, i) => runUser(i, users, dial, until, stats)), runAttacks(target, attacks, until, attackCounts)]);
  const nop = await prober?.stop();
  clearInterval(progress);
  process.stderr.write('\n');
  await sleep(500);
  const rssEnd = rssMb(server.pid);
  await drain(users, dial, stats);
  const missing = [...stats.acked.entries()].filter(([id]) => !stats.received.has(id));
  // Written to the recipient's socket, then thrown away unread by that client's own reset:
  // delivered as far as the protocol can know (it has no acknowledgements).
  const atReset = missing.filter(([, m]) => (stats.resets.get(m.to) ?? []).some((t) => t >= m.at - 50 && t <= m.at + 2000));
  const lost = missing.filter((entry) => !atReset.includes(entry)).map(([id]) => id);
  const duplicates = [...stats.received.values()].filter((n) => n > 1).length;
  await server.stop();
  if (process.env.SOAK_KEEP) console.error(`data kept in ${server.data}`);
  else rmSync(server.data, { recursive: true, force: true });
  const growth = rssEnd - rssStart;
  const report = {
    seconds: flags.seconds,
    clients: flags.clients,
    sendsAcknowledged: stats.acked.size,
    delivered: stats.acked.size - missing.length,
    unreadAtClientReset: atReset.length,
    lost: lost.length,
    duplicates,
    reconnects: stats.reconnects,
    abruptDisconnects: stats.abrupt,
    errors: Object.fromEntries(stats.errors),
    rssStartMb: Number(rssStart.toFixed(1)),
    rssEndMb: Number(rssEnd.toFixed(1)),
    rssMaxMb: Number(Math.max(rssStart, ...samples).toFixed(1)),
    rssGrowthBoundMb: flags.rssGrowthMb,
    serverHeapMb: flags.serverHeapMb === 0 ? 'node default' : flags.serverHeapMb,
    ...(flags.attacks === undefined
      ? {}
      : {
          tls: flags.tls,
          nopRoundTripMs: nop,
          attacks: Object.fromEntries([...attackCounts].sort(([a], [b]) => a.localeCompare(b))),
          serverLogLines: Object.fromEntries([...server.logLines].filter(([msg]) => msg !== 'listening')),
        }),
  };
  console.log(JSON.stringify(report, null, 2));
  if (lost.length > 0) console.error(`soak: LOST ${lost.length} acknowledged messages, e.g. ${lost.slice(0, 5).join(' ')}`);
  if (growth > flags.rssGrowthMb) console.error(`soak: RSS grew ${growth.toFixed(1)} MB, over the bound of ${flags.rssGrowthMb} MB`);
  process.exitCode = lost.length === 0 && growth <= flags.rssGrowthMb ? 0 : 1;
}

await main();
