/**
 * GATEWAYS.md section 1 read line by line as an outside tester would: the
 * statements websocket.test.ts and ws-standards.test.ts leave out (replies
 * to binary requests come back as text, an empty message is a keepalive,
 * escaping and the inbox unchanged over WebSocket).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, startServer, type TestServer } from '../helpers/server.ts';
import { freshUsers, PW } from '../helpers/users.ts';
import { clientFrame, RawWs, text } from '../helpers/raw-ws.ts';
import { WsConnection } from '../helpers/ws.ts';

let srv: TestServer;
const open: { close(): void }[] = [];

beforeAll(async () => {
  srv = await startServer(['--ws-port', '0']);
});

afterAll(async () => {
  for (const c of open) c.close();
  await srv.stop();
  removeDir(srv.data);
});

const binary = (payload: string) => clientFrame(2, payload);

describe('WebSocket messages', () => {
  it('replies to text and binary requests come back as text messages; an empty message is a keepalive', async () => {
    const ws = await RawWs.open(srv.server.wsPort!);
    open.push(ws);
    expect(ws.status).toBe(101);
    ws.write(text('nop'), binary('nop'), text(''), binary(''), binary('whoami'));
    await ws.until(() => ws.frames.length >= 5);
    expect(ws.frames.map((f) => [f.opcode, f.fin])).toEqual(Array(5).fill([1, true]));
    expect(ws.frames.slice(0, 4).map((f) => f.payload.length)).toEqual([0, 0, 0, 0]);
    expect(ws.frames[4]!.payload.toString('utf8')).toMatch(/^error,nonfatal,not_logged_in(,.*)?$/);
  });

  it('escaping, req and the inbox are the TCP protocol unchanged', async () => {
    const [a, b] = await freshUsers(srv.port, 'wsa', 'wsb');
    const url = `ws://127.0.0.1:${srv.server.wsPort}/ws`;
    const wa = await WsConnection.open(url);
    const wb = await WsConnection.open(url);
    open.push(wa, wb);
    expect(await wa.ask('sync')).toBe('ok');
    expect(await wa.ask(`login,${a},${PW}`)).toBe('ok');
    expect(await wa.ask('resume,,0')).toMatch(/^resumed,[A-Za-z0-9]{8,16},0$/);
    expect(await wb.ask(`login,${b},${PW}`)).toBe('ok');
    expect(await wb.ask(`req,r\\,1,send,${a},msg,x\\,y\\\\z`)).toBe('req,r\\,1,ok');
    expect(await wa.next()).toBe(`inbox,1,send,${b},msg,x\\,y\\\\z`);
    wa.send(`send,${b},re`);
    expect(await wa.nextN(2)).toEqual([`inbox,2,sent,${b},re`, 'ok']);
    expect(await wb.next()).toBe(`send,${a},re`);
  });

  it('token,<token> is a login like login: stored messages follow its ok; on an inbox connection they wait for resume', async () => {
    const http = await startServer(['--ws-port', '0']);
    try {
      const [a, b] = await freshUsers(http.port, 'tk', 'tkb');
      const d = await WsConnection.open(`ws://127.0.0.1:${http.server.wsPort}/ws`);
      open.push(d);
      expect(await d.ask(`login,${b},${PW}`)).toBe('ok');
      expect(await d.ask(`send,${a},stored,1`)).toBe('ok');
      const base = `http://127.0.0.1:${http.server.wsPort}`;
      const login = await fetch(`${base}/api/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: a, password: PW }),
      });
      const { token } = (await login.json()) as { token: string };
      const inboxWs = await WsConnection.open(`ws://127.0.0.1:${http.server.wsPort}/ws`);
      open.push(inboxWs);
      expect(await inboxWs.ask('sync')).toBe('ok');
      expect(await inboxWs.ask(`token,${token}`)).toBe('ok');
      expect(await inboxWs.ask('nop')).toBe(''); // nothing drained to an inbox connection
      const v1 = await WsConnection.open(`ws://127.0.0.1:${http.server.wsPort}/ws`);
      open.push(v1);
      v1.send(`token,${token}`);
      expect(await v1.nextN(2)).toEqual(['ok', `send,${b},stored,1`]);
      expect(await inboxWs.ask('resume,,0')).toMatch(/^resumed,[A-Za-z0-9]{8,16},1$/);
      expect(await inboxWs.next()).toBe(`inbox,1,send,${b},stored,1`);
    } finally {
      await http.stop();
      removeDir(http.data);
    }
  });
});

describe('the textserver.v1 subprotocol (RFC 6455 section 4)', () => {
  const protocolOf = (head: string) => /^sec-websocket-protocol: *(.*)$/im.exec(head)?.[1];

  it('is chosen from a list that offers it among others, and named in none of the other cases', async () => {
    const cases: [string | null, string | undefined][] = [
      ['chat, textserver.v1', 'textserver.v1'],
      ['chat\r\nSec-WebSocket-Protocol: textserver.v1', 'textserver.v1'],
      ['chat', undefined],
      [null, undefined],
    ];
    for (const [offer, chosen] of cases) {
      const ws = await RawWs.open(srv.server.wsPort!, { headers: { 'Sec-WebSocket-Protocol': offer } });
      open.push(ws);
      expect(ws.status, String(offer)).toBe(101);
      expect(protocolOf(ws.head), String(offer)).toBe(chosen);
    }
  });

  it('is compared exactly: an offer of TextServer.V1 is not answered with textserver.v1, which the client would fail', async () => {
    const ws = await RawWs.open(srv.server.wsPort!, { headers: { 'Sec-WebSocket-Protocol': 'TextServer.V1' } });
    open.push(ws);
    expect(ws.status).toBe(101);
    expect(protocolOf(ws.head)).toBeUndefined();
    // browsers fail a handshake whose answer names a subprotocol they did not offer, and accept one naming none
    ws.write(text('nop'));
    await ws.until(() => ws.frames.length === 1);
    expect(ws.texts).toEqual(['']);
  });
});
