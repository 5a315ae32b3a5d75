/** Scenarios with their own shape: login flood, idle connections, history on a big room. */
import argon2 from 'argon2';
import { availableParallelism, tmpdir } from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { join } from 'node:path';
import type net from 'node:net';
import { connect } from '../../src/client/client.ts';
import { encodeFrame } from '../../src/wire/frame-encoder.ts';
import { formatFields } from '../../src/text/fields.ts';
import { closedLoop, exchange, newWindow, openSocket, pacedLoop } from './load.ts';
import { rssBytes, startMinServer, startRedis, startTextserver, redisAvailable, type System } from './systems.ts';
import { DURABLE } from './durable.ts';
import { RESUME } from './resume.ts';
import { CLUSTER_SPECIAL } from './cluster.ts';

export type SpecialResult = { scenario: string; title: string; figures: Record<string, number | string> };
type Flags = { warmup: number; duration: number; idleConnections: number; runs: number; presenceTtl: number };
type Progress = (text: string) => void;

const PW = 'password1';
const frame = (...fields: string[]) => encodeFrame(formatFields(fields));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sends one request and reads exactly one frame back. */
function oneFrame(socket: net.Socket, request: Buffer): Promise<Buffer> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(0)) {
        socket.off('data', onData);
        resolve(buf);
      }
    };
    socket.on('data', onData);
    socket.write(request);
  });
}

async function measure(flags: Flags, body: () => void): Promise<number> {
  await sleep(flags.warmup * 1000);
  const t0 = performance.now();
  body();
  await sleep(flags.duration * 1000);
  return (performance.now() - t0) / 1000;
}

/** 200 clients hammer login (real argon2 defaults) while 10 others do nop round trips. */
async function login(flags: Flags, progress: Progress): Promise<SpecialResult> {
  const clients = 200;
  const system = await startTextserver({ args: ['--hash-queue', '100000', '--login-fail-limit-ip', '1000000'] });
  try {
    progress(`bench login: registering ${clients} users with the default argon2 parameters`);
    const c = await connect({ port: system.port });
    const names = Array.from({ length: clients }, (_, i) => `login${String(i).padStart(4, '0')}`);
    await Promise.all(names.map((n) => c.call('register', n, PW)));
    await c.close();
    progress('bench login: flood');
    const logins = newWindow();
    const nops = newWindow();
    const loginSockets = await Promise.all(names.map(() => openSocket(system.port)));
    const nopSockets = await Promise.all(Array.from({ length: 10 }, () => openSocket(system.port)));
    const stops = [
      ...loginSockets.map((s, i) => closedLoop(s, frame('login', names[i]!, PW), 7, 1, logins)),
      ...nopSockets.map((s) => pacedLoop(s, frame('nop'), 5, 10, nops)),
    ];
    const elapsed = await measure(flags, () => {
      logins.measuring = true;
      nops.measuring = true;
    });
    logins.measuring = false;
    nops.measuring = false;
    for (const s of stops) s();
    for (const s of [...loginSockets, ...nopSockets]) s.destroy();
    const rate = logins.count / elapsed;
    progress('bench login: argon2 alone');
    const own = await argon2Rate(flags);
    return {
      scenario: 'login',
      title: `login flood: ${clients} clients logging in (argon2id m=19456 t=2 p=1); 10 other clients each send a nop every 10 ms`,
      figures: {
        'logins/s': rate,
        'argon2 verifies/s in-process, same core count': own,
        'logins/s ÷ argon2 alone': rate / own,
        'login p99 ms': logins.latency.getValueAtPercentile(99) / 1000,
        'other clients nop p50 ms': nops.latency.getValueAtPercentile(50) / 1000,
        'other clients nop p99 ms': nops.latency.getValueAtPercentile(99) / 1000,
        'other clients nop/s': nops.count / elapsed,
      },
    };
  } finally {
    await system.stop();
  }
}

/** argon2's own verify rate with as many concurrent verifies as CPUs (the server's --hash-concurrency default). */
async function argon2Rate(flags: Flags): Promise<number> {
  const hash = await argon2.hash(PW, { type: argon2.argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1 });
  let count = 0;
  let running = true;
  const loops = Array.from({ length: availableParallelism() }, async () => {
    while (running) {
      await argon2.verify(hash, PW);
      count++;
    }
  });
  await sleep(flags.warmup * 500);
  const c0 = count;
  const t0 = performance.now();
  await sleep(flags.duration * 1000);
  const rate = (count - c0) / ((performance.now() - t0) / 1000);
  running = false;
  await Promise.all(loops);
  return rate;
}

/** RSS per idle connection: N connections that each did one round trip, then sit. */
async function idle(flags: Flags, progress: Progress): Promise<SpecialResult> {
  const n = flags.idleConnections;
  const figures: Record<string, number | string> = {};
  const starters: [string, () => Promise<System>, Buffer, number][] = [
    ['min-server', () => startMinServer(false), frame('nop'), 5],
    ['textserver', () => startTextserver({}), frame('nop'), 5],
  ];
  if (redisAvailable()) starters.push(['redis', startRedis, Buffer.from('PING\r\n'), 7]);
  for (const [name, start, request, replySize] of starters) {
    const system = await start();
    const sockets: net.Socket[] = [];
    try {
      await sleep(500);
      const before = rssBytes(system.pid);
      for (let i = 0; i < n; i += 250) {
        progress(`bench idle: ${name} ${i}/${n} connections`);
        const batch = await Promise.all(
          // no local address: a bound socket's port is picked before the destination is known, and
          // collides with the TIME_WAIT ports of the system measured before (connect EADDRINUSE)
          Array.from({ length: Math.min(250, n - i) }, () => openSocket(system.port)),
        );
        await Promise.all(batch.map((s) => exchange(s, request, replySize)));
        sockets.push(...batch);
      }
      await sleep(1000);
      const after = rssBytes(system.pid);
      figures[`${name} KB per connection`] = (after - before) / n / 1024;
      figures[`${name} RSS MB with ${n} connections`] = after / 1024 / 1024;
    } finally {
      for (const s of sockets) s.destroy();
      await system.stop();
    }
  }
  const min = figures['min-server KB per connection'] as number;
  figures['textserver ÷ min-server'] = (figures['textserver KB per connection'] as number) / min;
  return { scenario: 'idle', title: `idle: RSS per connection at ${n} connections (each did one round trip)`, figures };
}

/** history,<room>,last,50 on a room of 100 messages and on one of 1,000,000. */
async function history(flags: Flags, progress: Progress): Promise<SpecialResult> {
  progress('bench history: preparing rooms');
  const data = mkdtempSync(join(tmpdir(), 'textserver-bench-history-'));
  const first = await startTextserver({ data, fastHash: true });
  const c = await connect({ port: first.port });
  await c.call('register', 'historian', PW);
  await c.login('historian', PW);
  for (const room of ['small', 'big']) await c.request('join', room);
  await c.close();
  const sizes: Record<string, number> = { small: 100, big: 1_000_000 };
  await first.stop().catch(() => undefined);
  const db = new DatabaseSync(join(data, 'textserver.db'));
  for (const [room, count] of Object.entries(sizes)) {
    progress(`bench history: writing ${count} messages to ${room}`);
    const id = Number((db.prepare('SELECT id FROM rooms WHERE name = ?').get(room) as { id: number }).id);
    const insert = db.prepare('INSERT INTO room_messages (room_id, time, user, text) VALUES (?, ?, ?, ?)');
    const t0 = Date.now() - count;
    db.exec('BEGIN');
    for (let i = 0; i < count; i++) insert.run(id, t0 + i, 'historian', `message number ${i} in ${room}`);
    db.exec('COMMIT');
  }
  db.close();
  const system = await startTextserver({ data, fastHash: true });
  const figures: Record<string, number> = {};
  try {
    for (const room of ['small', 'big', 'small', 'big'].slice(0, 2 * Math.max(1, Math.min(2, flags.runs)))) {
      progress(`bench history: ${room}`);
      const sockets: net.Socket[] = [];
      for (let i = 0; i < 10; i++) {
        const s = await openSocket(system.port);
        await exchange(s, frame('login', 'historian', PW), 7);
        sockets.push(s);
      }
      const request = frame('history', room, 'last', '50');
      const size = (await oneFrame(sockets[0]!, request)).length;
      const window = newWindow();
      const stops = sockets.map((s) => closedLoop(s, request, size, 1, window));
      const elapsed = await measure(flags, () => (window.measuring = true));
      window.measuring = false;
      for (const s of stops) s();
      for (const s of sockets) s.destroy();
      const key = `${room} (${sizes[room]!.toLocaleString('en-US')} messages)`;
      figures[`${key} req/s`] = Math.max(figures[`${key} req/s`] ?? 0, window.count / elapsed);
      figures[`${key} p99 ms`] = window.latency.getValueAtPercentile(99) / 1000;
    }
  } finally {
    await system.stop();
    rmSync(data, { recursive: true, force: true });
  }
  const rates = Object.entries(figures)
    .filter(([k]) => k.endsWith('req/s'))
    .map(([, v]) => v);
  figures['1,000,000 ÷ 100 speed'] = rates[1]! / rates[0]!;
  return { scenario: 'history', title: 'history,<room>,last,50, C=10, P=1', figures };
}

export const SPECIAL: Record<string, (flags: Flags, progress: Progress) => Promise<SpecialResult>> = {
  login,
  idle,
  history,
  ...DURABLE,
  ...RESUME,
  ...CLUSTER_SPECIAL,
};
