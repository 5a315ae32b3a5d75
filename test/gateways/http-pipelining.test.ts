/**
 * Pipelined HTTP requests of one connection run a share per turn of the
 * event loop (README, security table): the others are served in between,
 * the replies keep their order, and a client that never reads is not read
 * on.
 */
import http from 'node:http';
import net from 'node:net';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { removeDir, startServer, type TestServer } from '../helpers/server.ts';
import { eventually } from '../helpers/eventually.ts';
import { countPerTurn } from '../helpers/per-turn.ts';

let srv: TestServer;
let port: number;

beforeAll(async () => {
  srv = await startServer(['--http-port', '0']);
  port = srv.server.httpPort!;
});

afterAll(async () => {
  await srv.stop();
  removeDir(srv.data);
});

/** `n` pipelined GETs in one write, alternating /healthz (`ok`) and /readyz (`ready`). */
function pipelined(n: number): Buffer {
  const parts: string[] = [];
  for (let i = 0; i < n; i++) parts.push(`GET ${i % 2 === 0 ? '/healthz' : '/readyz'} HTTP/1.1\r\nHost: x\r\n\r\n`);
  return Buffer.from(parts.join(''));
}

function connect(): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' }, () => resolve(socket));
    socket.once('error', reject);
  });
}

describe('pipelined HTTP requests', () => {
  it('run at most 64 of one connection a turn of the event loop, and every reply comes, in order', async () => {
    const n = 20_000;
    const socket = await connect();
    const chunks: Buffer[] = [];
    let answered = 0;
    let tail: Buffer = Buffer.alloc(0); // a status line may be split between reads
    const status = Buffer.from('HTTP/1.1 200');
    socket.on('data', (d: Buffer) => {
      chunks.push(d);
      const bytes = tail.length === 0 ? d : Buffer.concat([tail, d]);
      for (let at = bytes.indexOf(status); at >= 0; at = bytes.indexOf(status, at + 1)) answered++;
      tail = bytes.subarray(-(status.length - 1));
    });
    const ends = countPerTurn(http.ServerResponse.prototype, 'end');
    try {
      socket.write(pipelined(n));
      await eventually(() => expect(answered).toBe(n), 60_000, 50);
    } finally {
      ends.stop();
    }
    socket.destroy();
    const text = Buffer.concat(chunks).toString('latin1');
    const bodies = [...text.matchAll(/\r\n\r\n([a-z]+)/g)].map((m) => m[1]);
    expect(bodies.length).toBe(n);
    expect(bodies.every((b, i) => b === (i % 2 === 0 ? 'ok' : 'ready'))).toBe(true);
    // before: node handed over every request it had read at once (32 reads of 64 KiB a turn): thousands
    // of requests through the routes in one turn, half a second and more
    expect(ends.max()).toBeLessThanOrEqual(64);
  }, 90_000);

  it('/metrics requests that arrive together share one rendering', async () => {
    const n = 64;
    const renders = vi.spyOn(Registry.prototype, 'metrics');
    try {
      const socket = await connect();
      let text = '';
      socket.setEncoding('latin1').on('data', (d: string) => (text += d));
      socket.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(n));
      await eventually(() => expect(text.split('HTTP/1.1 200').length - 1).toBe(n), 30_000, 20);
      socket.destroy();
      expect(text.split('textserver_connections').length).toBeGreaterThan(n);
      // before: each rendered on its own, about 1 ms each: a client pipelining /metrics had every other
      // client wait a millisecond per request it sent
      expect(renders.mock.calls.length).toBeLessThanOrEqual(4);
    } finally {
      renders.mockRestore();
    }
  });

  it('a client that never reads is not read on while its replies wait', async () => {
    const socket = await connect();
    socket.pause(); // never reads its replies
    let written = false;
    // 21 MB, far past what the kernel buffers on both sides take: it is all written only if the server reads it all
    socket.write(pipelined(600_000), () => (written = true));
    const other = await connect();
    let answer = '';
    other.setEncoding('latin1').on('data', (d: string) => (answer += d));
    // a few seconds of the flood, while another client is served
    for (let i = 0; i < 30; i++) {
      other.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
      await eventually(() => expect(answer.split('HTTP/1.1 200').length - 1).toBe(i + 1), 10_000, 5);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(written).toBe(false);
    socket.destroy();
    other.destroy();
  }, 60_000);
});
