/**
 * The attack mix of `npm run soak -- --attacks LIST` (issue 11): each attack
 * runs at a low rate among the soak's normal traffic, from a loopback
 * address of its own (127.0.0.2 and up), so the per-address limits of one
 * attack do not throttle the normal clients on 127.0.0.1 or another attack.
 * Each one counts what it saw; soak.ts reports the counts with the nop
 * round-trip times of a prober connection and the server's RSS.
 */
import net from 'node:net';
import tls from 'node:tls';
import { FrameDecoder, isFault } from '../src/wire/frame-decoder.ts';
import { encodeFrame } from '../src/wire/frame-encoder.ts';
import { formatFields } from '../src/text/fields.ts';

export const ATTACKS = ['nested', 'logins', 'http', 'silent', 'history', 'flood', 'partial', 'ws', 'mailbox'] as const;
export type Attack = (typeof ATTACKS)[number];

/** Where the server listens; `webPort` serves HTTP and WebSocket (absent: those attacks only say so). */
export type Target = { port: number; webPort: number | undefined; tls: boolean };

export type Counts = Map<string, number>;

const PW = 'attack-password';
const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function count(counts: Counts, key: string, n = 1): void {
  counts.set(key, (counts.get(key) ?? 0) + n);
}

function dial(_target: Target, port: number, localAddress: string, secure: boolean): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const raw = net.connect({ port, host: '127.0.0.1', localAddress }, () => {
      if (!secure) return resolve(raw);
      const socket = tls.connect({ socket: raw, rejectUnauthorized: false }, () => resolve(socket));
      socket.once('error', reject);
    });
    raw.once('error', reject);
  });
}

/** A framed connection from a chosen source address; `keep` false only counts frames (a flood's audience). */
class Conn {
  readonly socket: net.Socket;
  readonly frames: string[] = [];
  keep: boolean;
  received = 0;
  closed = false;
  #cursor = 0;
  #wake: (() => void) | undefined;

  constructor(socket: net.Socket, keep: boolean) {
    this.socket = socket;
    this.keep = keep;
    const decoder = new FrameDecoder(64 * MiB);
    socket.on('data', (chunk: Buffer) => {
      decoder.push(chunk);
      for (let f = decoder.read(); f !== undefined; f = decoder.read()) {
        if (isFault(f)) break;
        this.received++;
        // keep errors even when not keeping frames: they say why a connection was cut
        if (this.keep || f.subarray(0, 6).toString() === 'error,') this.frames.push(f.toString('utf8', 0, this.keep ? f.length : Math.min(f.length, 200)));
      }
      this.#wake?.();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      this.#wake?.();
    });
  }

  static async open(target: Target, localAddress: string, keep = true): Promise<Conn> {
    return new Conn(await dial(target, target.port, localAddress, target.tls), keep);
  }

  send(...fields: string[]): void {
    this.socket.write(encodeFrame(formatFields(fields)));
  }

  /** The next frame not yet returned; undefined once the connection closed or after the timeout. */
  async next(timeoutMs = 30_000): Promise<string | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (this.#cursor >= this.frames.length) {
      if (this.closed || Date.now() >= deadline) return undefined;
      await new Promise<void>((r) => {
        const t = setTimeout(r, deadline - Date.now());
        this.#wake = () => (clearTimeout(t), r());
      });
    }
    return this.frames[this.#cursor++];
  }

  async ask(...fields: string[]): Promise<string | undefined> {
    this.send(...fields);
    return this.next();
  }

  close(): void {
    this.socket.destroy();
  }
}

const typeOf = (frame: string | undefined) => (frame === undefined ? 'closed' : frame.startsWith('error,') ? frame.split(',')[2]! : 'ok');

async function loggedIn(target: Target, user: string, localAddress: string, keep = true): Promise<Conn> {
  const c = await Conn.open(target, localAddress);
  const r = await c.ask('login', user, PW);
  if (r !== 'ok') throw new Error(`attack setup: login ${user} answered ${r}`);
  c.keep = keep;
  return c;
}

/** Runs `fn` every `everyMs` until `until` (a slow round delays the next); errors are counted, not thrown. */
async function every(until: number, everyMs: number, counts: Counts, name: string, fn: () => Promise<void>): Promise<void> {
  while (Date.now() < until) {
    const started = Date.now();
    try {
      await fn();
    } catch (err) {
      count(counts, `${name}.error:${(err as Error).message.slice(0, 60)}`);
    }
    await sleep(Math.max(0, Math.min(everyMs - (Date.now() - started), until - Date.now())));
  }
}

/** Accounts, rooms and stored messages the attacks need; registered from 127.0.0.1 like the normal users. */
export async function prepare(target: Target, attacks: readonly Attack[]): Promise<void> {
  const setup = await Conn.open(target, '127.0.0.1');
  const names = [
    'victim',
    'histreader',
    'flooder',
    ...Array.from({ length: 10 }, (_, i) => `audience${i}`),
    ...Array.from({ length: 4 }, (_, i) => `poster${i}`),
    'mbox0',
    'mbox1',
  ];
  for (const n of names) await setup.ask('register', n, PW);
  setup.close();
  if (attacks.includes('history')) {
    // 12 messages of 1 MiB: a `last,500` page is 12 MiB, over the default --max-outbound of 8 MiB
    const big = 'h'.repeat(MiB - 100);
    await Promise.all(
      Array.from({ length: 4 }, async (_, i) => {
        const c = await loggedIn(target, `poster${i}`, '127.0.0.1');
        await c.ask('join', 'attack-hist');
        for (let k = 0; k < 3; k++) c.send('say', 'attack-hist', big);
        for (let said = 0; said < 3; ) {
          const f = await c.next();
          if (f === undefined || f.startsWith('error,')) throw new Error(`attack setup: say answered ${f}`);
          if (f.startsWith('said,')) said++; // its own message's push comes too
        }
        c.close();
      }),
    );
    const reader = await loggedIn(target, 'histreader', '127.0.0.1');
    await reader.ask('join', 'attack-hist');
    reader.close();
  }
}

/** Runs the chosen attacks until `until`; resolves when all have stopped and closed their sockets. */
export async function run(target: Target, attacks: readonly Attack[], until: number, counts: Counts): Promise<void> {
  const loops: Record<Attack, () => Promise<void>> = {
    nested: () => nested(target, until, counts),
    logins: () => logins(target, until, counts),
    http: () => halfSentHttp(target, until, counts),
    silent: () => silent(target, until, counts),
    history: () => history(target, until, counts),
    flood: () => flood(target, until, counts),
    partial: () => partial(target, until, counts),
    ws: () => halfSentWs(target, until, counts),
    mailbox: () => mailbox(target, until, counts),
  };
  await Promise.all(attacks.map((a) => loops[a]().catch((err: Error) => count(counts, `${a}.failed:${err.message.slice(0, 60)}`))));
}

/** Item 1: the 600 KB frame of 100,000 nested reqs, every 2 s. */
function nested(target: Target, until: number, counts: Counts): Promise<void> {
  const frame = encodeFrame('req,1,'.repeat(100_000) + 'nop');
  return every(until, 2000, counts, 'nested', async () => {
    const c = await Conn.open(target, '127.0.0.2');
    const started = performance.now();
    c.socket.write(frame);
    const reply = await c.next();
    count(counts, reply !== undefined && /^req,1,error,nonfatal,syntax/.test(reply) ? 'nested.refused' : `nested.answered:${typeOf(reply)}`);
    counts.set('nested.maxReplyMs', Math.max(counts.get('nested.maxReplyMs') ?? 0, Math.round(performance.now() - started)));
    c.close();
  });
}

/** Item 2: 40 concurrent wrong guesses for one name from four addresses, the right password among them, every 10 s. */
function logins(target: Target, until: number, counts: Counts): Promise<void> {
  const addresses = ['127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6'];
  return every(until, 10_000, counts, 'logins', async () => {
    const conns = await Promise.all(addresses.flatMap((a) => Array.from({ length: 10 }, () => Conn.open(target, a))));
    for (const [i, c] of conns.entries()) c.send('login', 'victim', `guess-${i}`);
    conns.at(-1)!.send('login', 'victim', PW);
    const replies = await Promise.all(conns.map((c) => c.next()));
    for (const r of replies) count(counts, `logins.guess:${typeOf(r)}`);
    count(counts, `logins.rightPassword:${typeOf(await conns.at(-1)!.next())}`);
    for (const c of conns) c.close();
  });
}

/** Item 3: half-sent HTTP request heads from one address, 50 more every 5 s, up to 1000 held. */
async function halfSentHttp(target: Target, until: number, counts: Counts): Promise<void> {
  if (target.webPort === undefined) return void count(counts, 'http.skipped (no HTTP listener)');
  const held = new Set<net.Socket>();
  await every(until, 5000, counts, 'http', async () => {
    for (let i = 0; i < 50 && held.size < 1000; i++) {
      const s = await dial(target, target.webPort!, '127.0.0.7', target.tls).catch(() => undefined);
      if (s === undefined) {
        count(counts, 'http.connectFailed');
        continue;
      }
      count(counts, 'http.opened');
      held.add(s);
      s.on('error', () => {});
      s.on('close', () => (held.delete(s), count(counts, 'http.closedByServer')));
      s.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n'); // the blank line never comes
    }
    const healthy = await fetch(`${target.tls ? 'https' : 'http'}://127.0.0.1:${target.webPort}/healthz`, { signal: AbortSignal.timeout(2000) }).then(
      (r) => r.ok,
      () => false,
    );
    count(counts, healthy ? 'http.healthzOk' : 'http.healthzFailed');
  });
  for (const s of held) s.removeAllListeners('close').destroy();
}

/** Item 3: connections that never send a byte (a TLS ClientHello that never comes, with --tls), 50 more every 5 s, up to 1000. */
async function silent(target: Target, until: number, counts: Counts): Promise<void> {
  const held = new Set<net.Socket>();
  await every(until, 5000, counts, 'silent', async () => {
    for (let i = 0; i < 50 && held.size < 1000; i++) {
      const s = await dial(target, target.port, '127.0.0.8', false).catch(() => undefined);
      if (s === undefined) {
        count(counts, 'silent.connectFailed');
        continue;
      }
      count(counts, 'silent.opened');
      held.add(s);
      s.on('error', () => {});
      s.on('close', () => (held.delete(s), count(counts, 'silent.closedByServer')));
    }
  });
  for (const s of held) s.removeAllListeners('close').destroy();
}

/** Item 4: three `history,attack-hist,last,500` (12 MiB each) never read, every 5 s. */
function history(target: Target, until: number, counts: Counts): Promise<void> {
  return every(until, 5000, counts, 'history', async () => {
    const c = await loggedIn(target, 'histreader', '127.0.0.10');
    c.socket.pause();
    for (let i = 0; i < 3; i++) c.send('history', 'attack-hist', 'last', '500');
    await sleep(2000);
    c.socket.resume();
    let first = await c.next(10_000);
    while (first !== undefined && !first.startsWith('history,') && !first.startsWith('error,')) first = await c.next(10_000); // a push
    count(
      counts,
      first?.startsWith('history,') ? `history.replied:${first.split(',')[2]} rows, ${Math.round(first.length / MiB)} MiB` : `history.${typeOf(first)}`,
    );
    c.close();
  });
}

/** Item 7: one member posting 1 MiB messages every 100 ms to a room of ten members who read. */
async function flood(target: Target, until: number, counts: Counts): Promise<void> {
  const audience = await Promise.all(Array.from({ length: 10 }, (_, i) => loggedIn(target, `audience${i}`, '127.0.0.11', false)));
  for (const a of audience) {
    a.send('join', 'attack-flood');
  }
  const flooder = await loggedIn(target, 'flooder', '127.0.0.12', false);
  flooder.send('join', 'attack-flood');
  const big = 'f'.repeat(MiB - 100);
  let sent = 0;
  await every(until, 100, counts, 'flood', async () => {
    const seen = flooder.received;
    flooder.send('say', 'attack-flood', big);
    sent++;
    while (flooder.received === seen && !flooder.closed) await sleep(5); // its reply, or its own message's push
  });
  count(counts, 'flood.sent', sent);
  count(counts, 'flood.rateLimited', flooder.frames.filter((f) => f.includes(',rate_limited,')).length);
  count(counts, 'flood.audienceCut', audience.filter((a) => a.closed).length);
  count(counts, 'flood.audienceFramesEach', Math.round(audience.reduce((n, a) => n + a.received, 0) / audience.length));
  for (const c of [flooder, ...audience]) c.close();
}

/** Item 8: 20 connections each holding a 1 MiB frame one byte short, for 2 s, every 5 s. */
function partial(target: Target, until: number, counts: Counts): Promise<void> {
  const body = Buffer.alloc(MiB - 1, 0x70);
  return every(until, 5000, counts, 'partial', async () => {
    const conns = await Promise.all(Array.from({ length: 20 }, () => Conn.open(target, '127.0.0.13')));
    for (const c of conns) c.socket.write(Buffer.concat([Buffer.from([0, 0x10, 0, 0, 0]), body]));
    await sleep(2000);
    count(counts, 'partial.held', conns.filter((c) => !c.closed).length);
    for (const c of conns) c.close();
  });
}

/** Item 6: WebSocket messages announcing 1 MiB, 100 KB of it sent, held until the server closes them (up to 20 at once). */
async function halfSentWs(target: Target, until: number, counts: Counts): Promise<void> {
  if (target.webPort === undefined) return void count(counts, 'ws.skipped (no WebSocket listener)');
  const held = new Set<net.Socket>();
  await every(until, 5000, counts, 'ws', async () => {
    for (let i = 0; i < 5 && held.size < 20; i++) {
      const s = await dial(target, target.webPort!, '127.0.0.14', target.tls);
      s.on('error', () => {});
      s.write(
        `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${target.webPort}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: textserver.v1\r\n\r\n`,
      );
      const upgraded = await new Promise<boolean>((resolve) => {
        s.once('data', (d: Buffer) => resolve(d.toString('latin1').startsWith('HTTP/1.1 101')));
        s.once('close', () => resolve(false));
      });
      if (!upgraded) {
        count(counts, 'ws.refused');
        s.destroy();
        continue;
      }
      count(counts, 'ws.opened');
      held.add(s);
      s.on('close', () => (held.delete(s), count(counts, 'ws.closedByServer')));
      const head = Buffer.alloc(14);
      head[0] = 0x81; // FIN, text
      head[1] = 0x80 | 127; // masked, 64-bit length
      head.writeBigUInt64BE(BigInt(MiB - 10), 2);
      s.write(Buffer.concat([head, Buffer.alloc(100_000)])); // mask 0000: the payload goes as is
    }
  });
  for (const s of held) s.removeAllListeners('close').destroy();
}

/** Item 5: two accounts with 20 stored 256 KB messages each logging in together without reading for 1 s, every 10 s. */
function mailbox(target: Target, until: number, counts: Counts): Promise<void> {
  const text = 'm'.repeat(256 * 1024);
  return every(until, 10_000, counts, 'mailbox', async () => {
    const senders = await Promise.all(Array.from({ length: 4 }, (_, i) => loggedIn(target, `poster${i}`, '127.0.0.15')));
    await Promise.all(
      senders.map(async (s, i) => {
        for (let k = 0; k < 10; k++) s.send('send', `mbox${i % 2}`, 'mail', text);
        for (let k = 0; k < 10; k++) count(counts, `mailbox.store:${typeOf(await s.next())}`);
        s.close();
      }),
    );
    const readers = await Promise.all([0, 1].map(() => Conn.open(target, '127.0.0.15', false)));
    readers.forEach((r, i) => {
      r.socket.pause();
      r.send('login', `mbox${i}`, PW);
    });
    await sleep(1000);
    for (const r of readers) r.socket.resume();
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && readers.some((r) => r.received < 21 && !r.closed)) await sleep(50);
    count(
      counts,
      'mailbox.delivered',
      readers.reduce((n, r) => n + Math.max(0, r.received - 1), 0),
    );
    count(counts, 'mailbox.cut', readers.filter((r) => r.closed).length);
    for (const r of readers) r.close();
  });
}
