/** GATEWAYS.md section 1: the WebSocket transport, and delivery across TCP, WebSocket and HTTP. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, startServer, type TestServer } from '../helpers/server.ts';
import { RawConnection } from '../helpers/raw.ts';
import { api, WsConnection } from '../helpers/ws.ts';
import { freshUsers, PW } from '../helpers/users.ts';

let srv: TestServer;
let wsUrl: string;
let base: string;
const MAX = 4096;

beforeAll(async () => {
  srv = await startServer(['--ws-port', '0', '--max-request', String(MAX)]);
  wsUrl = `ws://127.0.0.1:${srv.server.wsPort}/ws`;
  base = `http://127.0.0.1:${srv.server.httpPort}`;
});

afterAll(async () => {
  await srv.stop();
  removeDir(srv.data);
});

describe('WebSocket transport', () => {
  it('runs the PROTOCOL.md conversation: register, login, whoami, req, errors', async () => {
    const c = await WsConnection.open(wsUrl);
    expect(await c.ask('nop')).toBe('');
    expect(await c.ask('register,wsuser,password1')).toBe('ok');
    expect(await c.ask('whoami')).toMatch(/^error,nonfatal,not_logged_in/);
    expect(await c.ask('login,WSUSER,password1')).toBe('ok');
    expect(await c.ask('req,7,whoami')).toBe('req,7,user,wsuser');
    expect(await c.ask('req,8,send,nobody,x')).toMatch(/^req,8,error,nonfatal,user_not_found/);
    expect(await c.ask('frobnicate')).toMatch(/^error,nonfatal,command_not_found/);
    expect(await c.ask('nop,x\\')).toMatch(/^error,nonfatal,syntax/);
    c.send(Buffer.from([0x6e, 0x6f, 0x70, 0xff]));
    expect(await c.next()).toMatch(/^error,nonfatal,syntax/);
    c.send('send,wsuser,note,a\\,b');
    expect(await c.nextN(2)).toEqual(['send,wsuser,note,a\\,b', 'ok']);
    c.close();
  });

  it('accepts the textserver.v1 subprotocol when asked', async () => {
    const c = await WsConnection.open(wsUrl, { protocols: ['textserver.v1'] });
    expect(c.ws.protocol).toBe('textserver.v1');
    expect(await c.ask('nop')).toBe('');
    c.close();
  });

  it('closes with 1008 after a fatal error (a message over --max-request)', async () => {
    const c = await WsConnection.open(wsUrl);
    expect(await c.ask(`nop,${'x'.repeat(MAX)}`)).toMatch(/^error,fatal,request_too_long/);
    expect(await c.closed()).toBe(1008);
  });

  it('refuses a foreign Origin with HTTP 403 and accepts its own', async () => {
    await expect(WsConnection.open(wsUrl, { origin: 'http://evil.example' })).rejects.toThrow(/403/);
    const own = await WsConnection.open(wsUrl, { origin: `http://127.0.0.1:${srv.server.wsPort}` });
    expect(await own.ask('nop')).toBe('');
    own.close();
    await expect(WsConnection.open(`ws://127.0.0.1:${srv.server.wsPort}/other`)).rejects.toThrow(/404/);
  });

  it('logs in with a token from the HTTP API (token,<token>)', async () => {
    const [u] = await freshUsers(srv.port, 'tok');
    const login = await api(base, 'POST', '/api/login', { user: u, password: PW });
    expect(login.status).toBe(200);
    const c = await WsConnection.open(wsUrl);
    expect(await c.ask(`token,${login.json.token}`)).toBe('ok');
    expect(await c.ask('whoami')).toBe(`user,${u}`);
    expect(await c.ask('token,not-a-real-token-at-all')).toMatch(/^error,nonfatal,wrong_user_or_password/);
    c.close();
  });
});

describe('across transports', () => {
  it('send reaches a user on TCP and on WebSocket at once, from either', async () => {
    const [a, b] = await freshUsers(srv.port, 'xa', 'xb');
    const tcpB = await RawConnection.open(srv.port);
    expect(await tcpB.ask('login', b!, PW)).toBe('ok');
    const wsB = await WsConnection.open(wsUrl);
    expect(await wsB.ask(`login,${b},${PW}`)).toBe('ok');
    const wsA = await WsConnection.open(wsUrl);
    expect(await wsA.ask(`login,${a},${PW}`)).toBe('ok');
    expect(await wsA.ask(`send,${b},msg,from ws`)).toBe('ok');
    expect(await tcpB.next()).toBe(`send,${a},msg,from ws`);
    expect(await wsB.next()).toBe(`send,${a},msg,from ws`);
    expect(await tcpB.ask('send', a!, 'msg', 'from tcp')).toBe('ok');
    expect(await wsA.next()).toBe(`send,${b},msg,from tcp`);
    const token = (await api(base, 'POST', '/api/login', { user: a, password: PW })).json.token;
    expect((await api(base, 'POST', `/api/send/${b}`, { command: 'msg', args: ['from http', 'x,y'] }, token)).status).toBe(204);
    expect(await tcpB.next()).toBe(`send,${a},msg,from http,x\\,y`);
    expect(await wsB.next()).toBe(`send,${a},msg,from http,x\\,y`);
    tcpB.close();
    wsB.close();
    wsA.close();
  });

  it('room messages reach TCP, WebSocket and HTTP members the same way', async () => {
    const [t, w, h] = await freshUsers(srv.port, 'rt', 'rw', 'rh');
    const room = `x-${t}`;
    const tcp = await RawConnection.open(srv.port);
    expect(await tcp.ask('login', t!, PW)).toBe('ok');
    tcp.send('join', room);
    await tcp.nextN(2);
    const ws = await WsConnection.open(wsUrl);
    expect(await ws.ask(`login,${w},${PW}`)).toBe('ok');
    ws.send(`join,${room}`);
    await ws.nextN(2);
    await tcp.next();
    const token = (await api(base, 'POST', '/api/login', { user: h, password: PW })).json.token;
    expect((await api(base, 'POST', `/api/rooms/${room}/join`, undefined, token)).status).toBe(204);
    expect(await tcp.next()).toBe(`room,${room},joined,${h}`);
    expect(await ws.next()).toBe(`room,${room},joined,${h}`);
    const posted = await api(base, 'POST', `/api/rooms/${room}/messages`, { text: 'via http' }, token);
    expect(posted.status).toBe(201);
    const push = `room,${room},msg,${posted.json.id},${posted.json.time},${h},via http`;
    expect(await tcp.next()).toBe(push);
    expect(await ws.next()).toBe(push);
    ws.send(`say,${room},via ws`);
    const [wsPush] = await ws.nextN(2);
    expect(await tcp.next()).toBe(wsPush);
    tcp.send('say', room, 'via tcp');
    await tcp.nextN(2);
    const history = await api(base, 'GET', `/api/rooms/${room}/messages?last=3`, undefined, token);
    expect(history.json.messages.map((m: { user: string; text: string }) => `${m.user}:${m.text}`)).toEqual([`${h}:via http`, `${w}:via ws`, `${t}:via tcp`]);
    tcp.close();
    ws.close();
  });
});

describe('origins with a separate HTTP port', () => {
  it("allows the HTTP gateway's pages and refuses others by default; --ws-origins replaces the default", async () => {
    const own = await startServer(['--ws-port', '0', '--http-port', '0']);
    const url = `ws://127.0.0.1:${own.server.wsPort}/ws`;
    const page = await WsConnection.open(url, { origin: `http://127.0.0.1:${own.server.httpPort}` });
    expect(await page.ask('nop')).toBe('');
    page.close();
    await expect(WsConnection.open(url, { origin: 'http://127.0.0.1:1' })).rejects.toThrow(/403/);
    await own.stop();
    removeDir(own.data);
    const listed = await startServer(['--ws-port', '0', '--ws-origins', 'https://chat.example,https://other.example']);
    const lurl = `ws://127.0.0.1:${listed.server.wsPort}/ws`;
    const ok = await WsConnection.open(lurl, { origin: 'https://chat.example' });
    ok.close();
    await expect(WsConnection.open(lurl, { origin: `http://127.0.0.1:${listed.server.wsPort}` })).rejects.toThrow(/403/);
    await listed.stop();
    removeDir(listed.data);
  });
});

describe('shutdown over WebSocket', () => {
  it('sends error,fatal,shutdown and closes with 1001', async () => {
    const own = await startServer(['--ws-port', '0']);
    const c = await WsConnection.open(`ws://127.0.0.1:${own.server.wsPort}/ws`);
    expect(await c.ask('nop')).toBe('');
    const stopping = own.stop();
    expect(await c.next()).toMatch(/^error,fatal,shutdown/);
    expect(await c.closed()).toBe(1001);
    await stopping;
    removeDir(own.data);
  });
});
