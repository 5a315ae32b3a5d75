/**
 * The WebSocket transport against RFC 6455 at the byte level (issue 12), and
 * its share of issue 11: half-sent messages time out, no new upgrade once
 * draining, origins from the configuration (not the Host header), and a
 * logged-out token ends the logins made with it.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, spawnServer, startServer, tempDir, type TestServer } from '../helpers/server.ts';
import { RawConnection } from '../helpers/raw.ts';
import { api, WsConnection } from '../helpers/ws.ts';
import { freshUsers, PW } from '../helpers/users.ts';
import { clientFrame, closeWith, RawWs, text } from '../helpers/raw-ws.ts';

/** Polls `check` until it holds (each poll waits for the previous one's answer). */
async function eventually(check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setImmediate(r));
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port: p } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(p));
    });
  });
}

let srv: TestServer;
let port: number;
const MAX = 4096;

beforeAll(async () => {
  srv = await startServer(['--ws-port', '0', '--max-request', String(MAX), '--request-timeout', '0.3', '--max-connections-per-ip', '1000']);
  port = srv.server.wsPort!;
});

afterAll(async () => {
  await srv.stop();
  removeDir(srv.data);
});

async function opened(): Promise<RawWs> {
  const ws = await RawWs.open(port);
  expect(ws.status).toBe(101);
  return ws;
}

describe('RFC 6455 framing', () => {
  it('a request and a Close in one write: the reply, then the Close, and nothing after it', async () => {
    const ws = await opened();
    ws.write(text('whoami'), text('nop'), closeWith(1000));
    await ws.until(() => ws.closed);
    expect(ws.texts).toEqual([expect.stringMatching(/^error,nonfatal,not_logged_in/), '', 'close 1000']);
  });

  it('a request still running when the Close comes gets no data frame after the Close', async () => {
    const [u] = await freshUsers(srv.port, 'wsc');
    const ws = await opened();
    ws.write(text(`login,${u},${PW}`), closeWith(1001)); // the password hash runs asynchronously
    await ws.until(() => ws.closed);
    expect(ws.texts).toEqual(['close 1001']); // the peer's code echoed
  });

  it('invalid UTF-8 in a text message closes with 1007; in a binary one it is a nonfatal syntax error', async () => {
    const bin = await opened();
    bin.write(clientFrame(2, Buffer.from([0x6e, 0x6f, 0x70, 0xff])));
    await bin.until(() => bin.frames.length === 1);
    expect(bin.texts[0]).toMatch(/^error,nonfatal,syntax/);
    bin.close();
    const ws = await opened();
    ws.write(text(Buffer.from([0x6e, 0x6f, 0x70, 0xff])));
    await ws.until(() => ws.closed);
    expect(ws.texts).toEqual(['close 1007']);
  });

  it('invalid UTF-8 in a close reason closes with 1007, not an echo of the code', async () => {
    const ws = await opened();
    ws.write(closeWith(1000, Buffer.from([0xc3, 0x28])));
    await ws.until(() => ws.closed);
    expect(ws.texts).toEqual(['close 1007']);
  });

  it('protocol violations close with 1002: an unmasked frame, a reserved bit, an invalid close code', async () => {
    for (const bad of [Buffer.from([0x81, 0x03, 0x6e, 0x6f, 0x70]), Buffer.concat([Buffer.from([0xc1]), clientFrame(1, 'nop').subarray(1)]), closeWith(1005)]) {
      const ws = await opened();
      ws.write(bad);
      await ws.until(() => ws.closed);
      expect(ws.texts).toEqual(['close 1002']);
    }
  });

  it('assembles fragments around a ping (answered with its payload) and answers a message in pieces', async () => {
    const ws = await opened();
    ws.write(clientFrame(1, 'send,nob', false), clientFrame(9, 'hello'), clientFrame(0, 'ody,x', false), clientFrame(0, ',y'));
    await ws.until(() => ws.frames.length === 2);
    expect(ws.texts).toEqual(['pong hello', expect.stringMatching(/^error,nonfatal,not_logged_in/)]);
    const frame = text('nop');
    for (const byte of frame) ws.write(Buffer.from([byte]));
    await ws.until(() => ws.frames.length === 3);
    expect(ws.texts[2]).toBe('');
    ws.close();
  });

  it('a message over --max-request is refused from its header, before its payload arrives', async () => {
    const ws = await opened();
    ws.write(clientFrame(1, Buffer.alloc(MAX + 1, 0x61)).subarray(0, 8)); // header and mask only
    await ws.until(() => ws.closed);
    expect(ws.texts).toEqual([expect.stringMatching(/^error,fatal,request_too_long/), 'close 1008']);
  });
});

describe('timeouts and limits (issue 11)', () => {
  it('a half-sent frame is cut by --request-timeout, while others are served', async () => {
    const ws = await opened();
    ws.write(text('nop,'.padEnd(100, 'x')).subarray(0, 20));
    const other = await opened();
    other.write(text('nop'));
    await other.until(() => other.frames.length === 1);
    await ws.until(() => ws.closed);
    expect(ws.texts).toEqual([expect.stringMatching(/^error,fatal,timeout,request not completed/), 'close 1008']);
    other.close();
  });

  it('a message whose last fragment never comes is cut by --request-timeout', async () => {
    const ws = await opened();
    ws.write(clientFrame(1, 'nop,abc', false));
    await ws.until(() => ws.closed);
    expect(ws.texts).toEqual([expect.stringMatching(/^error,fatal,timeout/), 'close 1008']);
  });

  it('WebSocket sockets count against --max-connections-per-ip like TCP ones', async () => {
    const own = await startServer(['--ws-port', '0', '--max-connections-per-ip', '2']);
    const url = `ws://127.0.0.1:${own.server.wsPort}/ws`;
    const a = await WsConnection.open(url);
    const b = await WsConnection.open(url);
    const tcp = await RawConnection.open(own.port);
    expect(await tcp.next()).toMatch(/^error,fatal,too_many_connections/);
    await expect(WsConnection.open(url)).rejects.toThrow();
    a.close();
    b.close();
    await own.stop();
    removeDir(own.data);
  });
});

describe('handshakes (RFC 6455 section 4, RFC 9110)', () => {
  it('answers a plain GET on the WebSocket path with 426 and Upgrade: websocket', async () => {
    const res = await fetch(`http://127.0.0.1:${port}/ws`);
    expect(res.status).toBe(426);
    expect(res.headers.get('upgrade')).toBe('websocket');
  });

  it('refuses an HTTP/1.0 handshake', async () => {
    const ws = await RawWs.open(port, { version: '1.0' });
    expect(ws.status).toBe(400);
    ws.close();
  });

  it('refuses an unknown version with 426 and the version it speaks', async () => {
    const ws = await RawWs.open(port, { headers: { 'Sec-WebSocket-Version': '8' } });
    expect(ws.status).toBe(426);
    expect(ws.head).toMatch(/Sec-WebSocket-Version: 13/i);
    ws.close();
  });

  it('an h2c upgrade (curl --http2) gets the normal answer, on the shared port and on an HTTP-only port', async () => {
    const httpOnly = await startServer(['--http-port', '0']);
    const own = await startServer(['--ws-port', '0', '--http-port', String(await freePort())]);
    for (const p of [port, httpOnly.server.httpPort!, own.server.httpPort!, own.server.wsPort!]) {
      const socket = net.connect({ port: p, host: '127.0.0.1' });
      let answer = '';
      socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
      const closed = new Promise<void>((r) => socket.on('close', () => r()));
      socket.write(
        `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${p}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n`,
      );
      await new Promise<void>((resolve) => {
        const check = () => (/\r\n\r\n/.test(answer) ? resolve() : undefined);
        socket.on('data', check);
        void closed.then(resolve);
      });
      socket.destroy();
      // the WebSocket-only port has no /healthz: a plain 404, not a dropped connection
      expect(answer.split('\r\n')[0], `port ${p}`).toBe(p === own.server.wsPort ? 'HTTP/1.1 404 Not Found' : 'HTTP/1.1 200 OK');
    }
    await own.stop();
    removeDir(own.data);
    await httpOnly.stop();
    removeDir(httpOnly.data);
  });

  it('takes the origins from the configuration: a DNS-rebinding page fails even with a matching Host', async () => {
    const rebinding = await RawWs.open(port, { headers: { Host: `evil.example:${port}`, Origin: `http://evil.example:${port}` } });
    expect(rebinding.status).toBe(403);
    rebinding.close();
    for (const origin of [`http://127.0.0.1:${port}`, `http://localhost:${port}`]) {
      const own = await RawWs.open(port, { headers: { Host: `evil.example:${port}`, Origin: origin } });
      expect(own.status, origin).toBe(101);
      own.close();
    }
    const nullOrigin = await RawWs.open(port, { headers: { Origin: 'null' } });
    expect(nullOrigin.status).toBe(403);
    nullOrigin.close();
  });
});

describe('token logout (GATEWAYS.md section 2)', () => {
  it('ends the login of every WebSocket and TCP connection that used the token, not of others', async () => {
    const own = await startServer(['--ws-port', '0']);
    const base = `http://127.0.0.1:${own.server.httpPort}`;
    const [u] = await freshUsers(own.port, 'rev');
    const token = (await api(base, 'POST', '/api/login', { user: u, password: PW })).json.token as string;
    const ws = await WsConnection.open(`ws://127.0.0.1:${own.server.wsPort}/ws`);
    expect(await ws.ask(`token,${token}`)).toBe('ok');
    const tcp = await RawConnection.open(own.port);
    expect(await tcp.ask('token', token)).toBe('ok');
    const byPassword = await RawConnection.open(own.port);
    expect(await byPassword.ask('login', u!, PW)).toBe('ok');
    expect(await ws.ask('whoami')).toBe(`user,${u}`);
    expect((await api(base, 'POST', '/api/logout', undefined, token)).status).toBe(204);
    expect(await ws.ask('whoami')).toMatch(/^error,nonfatal,not_logged_in/);
    expect(await tcp.ask('whoami')).toMatch(/^error,nonfatal,not_logged_in/);
    expect(await byPassword.ask('whoami')).toBe(`user,${u}`);
    expect(await ws.ask(`token,${token}`)).toMatch(/^error,nonfatal,wrong_user_or_password/);
    ws.close();
    tcp.close();
    byPassword.close();
    await own.stop();
    removeDir(own.data);
  });
});

describe('draining (SIGTERM)', () => {
  it('refuses new upgrades with 503 once draining and exits 0', async () => {
    const data = tempDir();
    const s = await spawnServer(['--data', data, '--ws-port', '0', '--argon2-memory-kib', '65536', '--argon2-time', '12']);
    const wsPort = (JSON.parse(await s.waitForLine(/"transport":"ws"/)) as { port: number }).port;
    const c = await RawConnection.open(s.port);
    c.send('register', 'slowdrain', PW); // in flight (a slow hash): the drain waits for it
    await eventually(async () => /^textserver_frames_total\{direction="in"\} 1$/m.test(await (await fetch(`http://127.0.0.1:${wsPort}/metrics`)).text()));
    s.proc.kill('SIGTERM');
    await s.waitForLine(/shutting down/);
    const late = await RawWs.open(wsPort);
    expect(late.status).toBe(503);
    late.close();
    expect(await c.nextN(2, 10_000)).toEqual(['ok', expect.stringMatching(/^error,fatal,shutdown/)]);
    expect(await s.exited).toBe(0);
    removeDir(data);
  });
});
