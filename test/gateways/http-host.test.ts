/**
 * The `Host` header, as RFC 9112 section 3.2 and RFC 6455 section 4.2.1
 * require it: an HTTP/1.1 request without one, or any request with two, is
 * 400 (in the gateway's `{"error","info"}` shape, like every refusal before
 * a route runs), and a WebSocket handshake without exactly one does not
 * switch protocols. Raw sockets: fetch and ws always send one Host.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, startServer, type TestServer } from '../helpers/server.ts';

let srv: TestServer;
let port: number;

beforeAll(async () => {
  srv = await startServer(['--ws-port', '0']); // HTTP on the WebSocket port
  port = srv.server.wsPort!;
});

afterAll(async () => {
  await srv.stop();
  removeDir(srv.data);
});

/** Sends raw bytes and reads until the server closes, or until the first reply's head and body are in. */
function exchange(request: string): Promise<{ status: number; headers: string; body: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    const done = (closed: boolean) => {
      const end = text.indexOf('\r\n\r\n');
      const head = text.slice(0, end);
      const length = /content-length: (\d+)/i.exec(head)?.[1];
      resolve({ status: Number(head.split(' ')[1]), headers: head.toLowerCase(), body: length === undefined ? '' : text.slice(end + 4, end + 4 + Number(length)), closed });
    };
    socket.on('data', (d) => {
      text += d.toString();
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return;
      const length = /content-length: (\d+)/i.exec(text.slice(0, end))?.[1];
      // a 101 has no body; anything else is complete once its Content-Length is in
      if (text.startsWith('HTTP/1.1 101') || (length !== undefined && text.length >= end + 4 + Number(length))) {
        done(false);
        socket.destroy();
      }
    });
    socket.on('close', () => done(true));
    socket.on('error', reject);
    socket.write(request);
  });
}

const UPGRADE = 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n';

describe('the Host header', () => {
  it('answers an HTTP/1.1 request without Host with 400 syntax as JSON', async () => {
    const r = await exchange('GET /api/info HTTP/1.1\r\n\r\n');
    expect(r.status).toBe(400);
    expect(r.headers).toContain('content-type: application/json; charset=utf-8');
    expect(JSON.parse(r.body)).toMatchObject({ error: 'syntax' });
  });

  it('answers a request with two Host headers with 400 syntax', async () => {
    const r = await exchange('GET /api/info HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n');
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body)).toMatchObject({ error: 'syntax' });
  });

  it('serves HTTP/1.0 without Host, and HTTP/1.1 with one', async () => {
    expect((await exchange('GET /healthz HTTP/1.0\r\n\r\n')).status).toBe(200);
    expect((await exchange(`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`)).status).toBe(200);
  });

  it('does not switch protocols for a WebSocket handshake without exactly one Host', async () => {
    expect((await exchange(`GET /ws HTTP/1.1\r\n${UPGRADE}\r\n`)).status).toBe(400);
    expect((await exchange(`GET /ws HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n${UPGRADE}\r\n`)).status).toBe(400);
    expect((await exchange(`GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n${UPGRADE}\r\n`)).status).toBe(101);
  });
});
