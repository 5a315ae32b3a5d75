/**
 * Issue 11 item 3: every socket of every listener counts against
 * `--max-connections` and `--max-connections-per-ip` (TCP, TLS before its
 * handshake, HTTP keep-alive and half-sent requests, WebSocket), a TLS
 * handshake and an HTTP request head must complete within
 * `--request-timeout`, and refusals are logged, a line per few seconds.
 * Scaled down: small limits, a few dozen sockets.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { removeDir, spawnServer, startServer, tempDir, type TestServer } from '../helpers/server.ts';
import { RawConnection } from '../helpers/raw.ts';
import { makeCertificate } from '../helpers/tls.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function server(args: string[]): Promise<TestServer> {
  const s = await startServer(args);
  cleanups.push(async () => {
    await s.stop();
    removeDir(s.data);
  });
  return s;
}

/** A raw socket that records what it was sent and when it closed. */
type Probe = { socket: net.Socket; received: () => string; closed: Promise<void>; isClosed: () => boolean };

function probe(port: number, localAddress = '127.0.0.1', first?: string): Promise<Probe> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress }, () => {
      if (first !== undefined) socket.write(first);
      resolve({ socket, received: () => text, closed, isClosed: () => done });
    });
    let text = '';
    let done = false;
    socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
    socket.on('error', () => {});
    socket.once('error', reject);
    const closed = new Promise<void>((r) => socket.on('close', () => ((done = true), r())));
    cleanups.push(() => void socket.destroy());
  });
}

/** A request head that never ends. */
const HALF = 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ';

async function healthz(port: number, localAddress: string): Promise<string> {
  const p = await probe(port, localAddress, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  await p.closed;
  return p.received().split('\r\n')[0]!;
}

async function nopFrom(port: number, localAddress: string): Promise<string> {
  const c = await new Promise<RawConnection>((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress }, () => resolve(RawConnection.fromSocket(socket)));
  });
  cleanups.push(() => c.close());
  return c.ask('nop');
}

describe('HTTP sockets count against the connection limits', () => {
  it('many half-sent requests from one address are held to its share and cut at the request timeout; TCP and /healthz stay up for others', async () => {
    const s = await server(['--http-port', '0', '--max-connections-per-ip', '8', '--max-connections', '40', '--request-timeout', '2']);
    const httpPort = s.server.httpPort!;
    const attack = await Promise.all(Array.from({ length: 30 }, () => probe(httpPort, '127.0.0.1', HALF)));
    // 8 held, the other 22 closed at once
    const closedCount = () => attack.filter((p) => p.isClosed()).length;
    while (closedCount() < 22) await Promise.race(attack.filter((p) => !p.isClosed()).map((p) => p.closed));
    expect(s.server.core.sessions.openSockets).toBe(8);
    // the attacker's address is full for every listener, TCP included
    const tcp = await RawConnection.open(s.port);
    cleanups.push(() => tcp.close());
    expect(await tcp.next()).toMatch(/^error,fatal,too_many_connections/);
    // everyone else is served meanwhile
    expect(await nopFrom(s.port, '127.0.0.2')).toBe('');
    expect(await healthz(httpPort, '127.0.0.3')).toBe('HTTP/1.1 200 OK');
    // the held ones get 408 when their head has not completed in time, and the address is free again
    await Promise.all(attack.map((p) => p.closed));
    expect(attack.filter((p) => p.received() === '').length).toBe(22);
    expect(attack.filter((p) => p.received().startsWith('HTTP/1.1 408')).length).toBe(8);
    expect(await healthz(httpPort, '127.0.0.1')).toBe('HTTP/1.1 200 OK');
  });

  it('keep-alive HTTP sockets count too, for the whole server', async () => {
    const s = await server(['--http-port', '0', '--max-connections', '3']);
    const base = `http://127.0.0.1:${s.server.httpPort}`;
    const held = await Promise.all([1, 2, 3].map(() => probe(s.server.httpPort!, '127.0.0.1', 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n')));
    for (const p of held) while (!p.received().includes('\r\n\r\nok')) await new Promise<void>((r) => p.socket.once('data', () => r()));
    const tcp = await RawConnection.open(s.port);
    cleanups.push(() => tcp.close());
    expect(await tcp.next()).toMatch(/^error,fatal,too_many_connections/);
    held[0]!.socket.destroy();
    while (s.server.core.sessions.openSockets > 2) await new Promise((r) => setImmediate(r));
    // the freed slot serves again; /metrics shows what is open
    const metrics = await (await fetch(`${base}/metrics`, { headers: { connection: 'close' } })).text();
    expect(metrics).toMatch(/^textserver_open_sockets\{listener="http"\} 3$/m);
    expect(metrics).toMatch(/^textserver_connections_refused_total [1-9]/m);
  });
});

describe('TLS sockets count from their first byte', () => {
  it('a socket that never sends a ClientHello is counted meanwhile and closed after the request timeout', async () => {
    const { cert, key, dir } = makeCertificate();
    cleanups.push(() => removeDir(dir));
    const s = await server(['--tls-cert', cert, '--tls-key', key, '--http-port', '0', '--max-connections-per-ip', '2', '--request-timeout', '1.5']);
    // both listeners at once: the framed TLS port and HTTPS, with their own addresses (the limit is per address, over all listeners)
    const check = async (port: number, address: string, otherAddress: string) => {
      const silent = await Promise.all([1, 2].map(() => probe(port, address)));
      const third = await probe(port, address);
      await third.closed; // over the per-address limit: refused at once
      expect(silent.some((p) => p.isClosed())).toBe(false);
      // another address completes its handshake meanwhile
      const other = tls.connect({
        socket: net.connect({ port, host: '127.0.0.1', localAddress: otherAddress }),
        ca: readFileSync(cert),
        servername: 'localhost',
      });
      cleanups.push(() => void other.destroy());
      await new Promise<void>((resolve, reject) => other.once('secureConnect', resolve).once('error', reject));
      expect(other.authorized).toBe(true);
      other.destroy();
      await Promise.all(silent.map((p) => p.closed));
      expect(silent.map((p) => p.received())).toEqual(['', '']);
    };
    await Promise.all([check(s.port, '127.0.0.1', '127.0.0.2'), check(s.server.httpPort!, '127.0.0.3', '127.0.0.4')]);
  });
});

describe('refusals are logged, rate-limited', () => {
  it('one line at the first refusal, the rest counted into the next', async () => {
    const data = tempDir();
    const s = await spawnServer(['--data', data, '--max-connections-per-ip', '1']);
    const first = await RawConnection.open(s.port);
    expect(await first.ask('nop')).toBe('');
    for (let i = 0; i < 10; i++) {
      const extra = await RawConnection.open(s.port);
      expect(await extra.next()).toMatch(/^error,fatal,too_many_connections/);
      extra.close();
    }
    first.close();
    s.proc.kill('SIGTERM');
    expect(await s.exited).toBe(0);
    const lines = s.lines
      .filter((l) => l.includes('"msg":"connections refused"'))
      .map((l) => JSON.parse(l) as { refused: number; last: { reason: string; address: string } });
    // the first refusal has its line at once; the others are counted into one line a few seconds apart (or at the stop)
    expect(lines[0]!.refused).toBe(1);
    expect(lines.reduce((sum, l) => sum + l.refused, 0)).toBe(10);
    expect(lines.length).toBeLessThan(4);
    expect(lines[0]!.last).toEqual({ address: '127.0.0.1', reason: 'max-connections-per-ip' });
    removeDir(data);
  });
});
