/**
 * Durable writes (STORAGE.md section 6): `say` with C clients each alone in
 * its own room, and offline `send` (stored messages), one request in flight
 * per client, data on the real disk; an unrelated connection sends `nop`
 * every 10 ms and its latency is reported (from a process of its own,
 * nop-probe.ts, and from the load generator's, as earlier rounds did). The baseline is Redis 7 with
 * `appendonly yes` and `appendfsync always` doing RPUSH through
 * redis-benchmark at the same concurrency, in the same run.
 */
import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type net from 'node:net';
import { connect } from '../../src/client/client.ts';
import { encodeFrame } from '../../src/wire/frame-encoder.ts';
import { formatFields } from '../../src/text/fields.ts';
import { closedLoop, exchange, newWindow, openSocket, pacedLoop, type Window } from './load.ts';
import { freePort, redisAvailable, startTextserver } from './systems.ts';
import { createDatabase, postgresBin, startPostgres, type Postgres } from '../postgres.ts';
import type { SpecialResult } from './special.ts';

type Flags = { warmup: number; duration: number; runs: number };
type Progress = (text: string) => void;

const PW = 'password1';
const frame = (...fields: string[]) => encodeFrame(formatFields(fields));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * Like closedLoop, for replies of varying size among pushes: a request is
 * done at the frame `isReply` recognises (by its first bytes); the pushes
 * around it (a room's own message, inbox entries from others) are skipped.
 */
function replyLoop(socket: net.Socket, request: () => Buffer, isReply: (start: string) => boolean, window: Window): () => void {
  let buf: Buffer = Buffer.alloc(0);
  let sentAt = 0;
  let stopped = false;
  const send = () => {
    sentAt = performance.now();
    socket.write(request());
  };
  socket.on('data', (chunk: Buffer) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(0)) {
      const size = buf.readUInt32BE(0);
      const reply = isReply(buf.toString('latin1', 5, 5 + Math.min(size, 6)));
      buf = buf.subarray(5 + size);
      if (!reply) continue;
      if (window.measuring) {
        window.count++;
        window.latency.recordValue(Math.max(1, Math.round((performance.now() - sentAt) * 1000)));
      }
      if (!stopped) send();
    }
  });
  socket.on('error', () => {});
  send();
  return () => {
    stopped = true;
  };
}

/** say: each alone in a room; stored: send to an offline user; inbox: send to an online inbox client (an entry and a carbon, both durable). */
type Load = 'say' | 'stored' | 'inbox';

/** One measured run of textserver: the rate, and the unrelated nop probe's p99. */
type RunResult = { rate: number; nopP99: number; nopP99InGenerator: number; p99: number };

/** The nop probe's process (nop-probe.ts), connected and sending. */
async function startProbe(port: number): Promise<ChildProcess> {
  const child = fork(new URL('./nop-probe.ts', import.meta.url), [String(port), '10'], { stdio: 'inherit' });
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('exit', (code) => reject(new Error(`the nop probe exited (${code})`)));
  });
  return child;
}

function probeResult(child: ChildProcess): Promise<{ p99: number }> {
  return new Promise((resolve) => {
    child.once('message', (m) => resolve(m as { p99: number }));
    child.send('stop');
  });
}

async function textserverRun(load: Load, c: number, store: string, flags: Flags): Promise<RunResult> {
  const system = await startTextserver({ fastHash: true, args: ['--store', store, '--mailbox-size', '100000000', '--max-outbound', String(64 * 1024 * 1024)] });
  try {
    const setup = await connect({ port: system.port });
    const names = Array.from({ length: c }, (_, i) => `writer${i}`);
    await Promise.all(names.flatMap((n) => [setup.call('register', n, PW), setup.call('register', `${n}_away`, PW)]));
    await setup.close();
    const sockets: net.Socket[] = [];
    for (const n of names) {
      const s = await openSocket(system.port);
      if (load === 'inbox') await oneReply(s, frame('sync'), 1);
      await exchange(s, frame('login', n, PW), 7);
      if (load === 'say') await oneReply(s, frame('join', `room_${n}`), 2);
      if (load === 'inbox') await oneReply(s, frame('resume', '', 'latest'), 1);
      sockets.push(s);
    }
    const window = newWindow();
    const probe = newWindow();
    const stops = sockets.map((s, i) =>
      load === 'say'
        ? replyLoop(
            s,
            () => frame('say', `room_${names[i]}`, 'a durable message of a typical length'),
            (start) => start.startsWith('said,'),
            window,
          )
        : load === 'inbox'
          ? replyLoop(
              s,
              () => frame('send', names[(i + 1) % c]!, 'msg', 'a durable message of a typical length'),
              (start) => !start.startsWith('inbox,'),
              window,
            )
          : closedLoop(s, frame('send', `${names[i]}_away`, 'msg', 'a durable message of a typical length'), 7, 1, window),
    );
    // the same probe twice: in its own process (the server's latency), and
    // in this one (that plus the generator's own queue, the figure of earlier rounds)
    const probeSocket = await openSocket(system.port);
    stops.push(pacedLoop(probeSocket, frame('nop'), 5, 10, probe));
    const probeProcess = await startProbe(system.port);
    await sleep(flags.warmup * 1000);
    window.measuring = probe.measuring = true;
    probeProcess.send('measure');
    const t0 = performance.now();
    await sleep(flags.duration * 1000);
    window.measuring = probe.measuring = false;
    const elapsed = (performance.now() - t0) / 1000;
    const outside = await probeResult(probeProcess);
    for (const s of stops) s();
    for (const s of [...sockets, probeSocket]) s.destroy();
    return {
      rate: window.count / elapsed,
      nopP99: outside.p99,
      nopP99InGenerator: probe.latency.getValueAtPercentile(99) / 1000,
      p99: window.latency.getValueAtPercentile(99) / 1000,
    };
  } finally {
    await system.stop();
  }
}

/** Sends one request and waits for `frames` whole frames back. */
function oneReply(s: net.Socket, request: Buffer, frames: number): Promise<void> {
  return new Promise((resolve) => {
    let buf: Buffer = Buffer.alloc(0);
    let seen = 0;
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(0)) {
        buf = buf.subarray(5 + buf.readUInt32BE(0));
        if (++seen === frames) {
          s.off('data', onData);
          resolve();
          return;
        }
      }
    };
    s.on('data', onData);
    s.write(request);
  });
}

/** Redis 7, appendonly with an fsync per write batch, RPUSH at C clients through redis-benchmark. */
async function redisRun(c: number, flags: Flags, writes: 1 | 2 = 1): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'textserver-bench-redis-'));
  const port = await freePort();
  const proc = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--dir', dir, '--protected-mode', 'no'],
    { stdio: 'ignore' },
  );
  try {
    for (
      let i = 0;
      i < 200 &&
      spawnSync('redis-cli', ['-p', String(port), 'ping'])
        .stdout?.toString()
        .trim() !== 'PONG';
      i++
    )
      await sleep(25);
    const requests = Math.max(2000, Math.round(flags.duration * 20_000));
    // two writes: one script with two RPUSH (atomic, one fsync), as an entry and its carbon in one commit
    const command =
      writes === 1
        ? ['-t', 'rpush']
        : [
            'EVAL',
            "redis.call('rpush', KEYS[1], ARGV[1]); return redis.call('rpush', KEYS[2], ARGV[1])",
            '2',
            'inbox:a',
            'inbox:b',
            'a durable message of a typical length',
          ];
    const out = spawnSync('redis-benchmark', ['-p', String(port), '-c', String(c), '-n', String(requests), '-q', '--csv', ...command], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    const line = out.stdout.split('\n').find((l) => /RPUSH|EVAL/i.test(l));
    // the first CSV field is the command, which may hold commas itself
    const rps = line?.match(/^"(?:[^"]|"")*","([^"]+)"/)?.[1];
    return rps === undefined ? Number.NaN : Number(rps);
  } finally {
    proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

async function durable(flags: Flags, progress: Progress): Promise<SpecialResult> {
  const figures: Record<string, number | string> = {};
  let pg: Postgres | undefined;
  if (postgresBin() !== undefined) {
    progress('bench durable: starting PostgreSQL (fsync on)');
    pg = await startPostgres({ durable: true });
  }
  const data = mkdtempSync(join(tmpdir(), 'textserver-bench-durable-'));
  try {
    const plan: { load: Load; c: number; stores: string[] }[] = [
      { load: 'say', c: 10, stores: ['sqlite'] },
      { load: 'say', c: 50, stores: ['sqlite', ...(pg ? ['postgres'] : [])] },
      { load: 'stored', c: 50, stores: ['sqlite', ...(pg ? ['postgres'] : [])] },
      { load: 'inbox', c: 50, stores: ['sqlite', ...(pg ? ['postgres'] : [])] },
    ];
    // BENCH_DURABLE=inbox,say runs only those loads (while working on one)
    const only = process.env.BENCH_DURABLE?.split(',');
    for (const { load, c, stores } of plan.filter((p) => only === undefined || only.includes(p.load))) {
      const redis: number[] = [];
      const runs = new Map<string, RunResult[]>();
      for (let r = 0; r < flags.runs; r++) {
        for (const store of stores) {
          progress(`bench durable: ${load} C=${c} on ${store}, run ${r + 1}`);
          const spec = store === 'sqlite' ? 'sqlite' : await createDatabase(pg!.url, `bench_${load}_${c}_${r}`);
          const result = await textserverRun(load, c, spec, flags);
          runs.set(store, [...(runs.get(store) ?? []), result]);
        }
        if (redisAvailable()) {
          progress(`bench durable: redis RPUSH appendfsync always C=${c}, run ${r + 1}`);
          redis.push(await redisRun(c, flags, load === 'inbox' ? 2 : 1));
        }
      }
      const base = redis.length > 0 ? median(redis) : Number.NaN;
      figures[`${load} C=${c}: redis appendfsync always ${load === 'inbox' ? '2×RPUSH script' : 'RPUSH'}/s`] = base;
      for (const [store, results] of runs) {
        const rate = median(results.map((x) => x.rate));
        figures[`${load} C=${c}: ${store} /s`] = rate;
        figures[`${load} C=${c}: ${store} ÷ redis`] = rate / base;
        figures[`${load} C=${c}: ${store} p99 ms`] = median(results.map((x) => x.p99));
        figures[`${load} C=${c}: ${store} other client's nop p99 ms`] = median(results.map((x) => x.nopP99));
        figures[`${load} C=${c}: ${store} the same probe in the load generator's process, p99 ms`] = median(results.map((x) => x.nopP99InGenerator));
      }
    }
  } finally {
    await pg?.stop();
    rmSync(data, { recursive: true, force: true });
  }
  return {
    scenario: 'durable',
    title:
      'durable writes: say (each client alone in its room), offline send, and send between online inbox clients (entry + carbon), one in flight per client; a separate nop every 10 ms; vs Redis appendfsync always RPUSH (a two-RPUSH script for inbox)',
    figures,
  };
}

export const DURABLE = { durable };
