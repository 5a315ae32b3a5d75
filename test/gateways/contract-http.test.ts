/**
 * GATEWAYS.md section 2 (and DELIVERY.md's Idempotency-Key) read line by
 * line as an outside tester would: the statements http-api.test.ts and
 * once.test.ts leave out (401 on every bearer route, the exact JSON shapes,
 * 403 not_friends, history limits over HTTP, what crosses from HTTP to TCP
 * with its escaping and its carbon, recorded error replies of an
 * Idempotency-Key).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { removeDir, startServer, type TestServer } from '../helpers/server.ts';
import { api } from '../helpers/ws.ts';
import { PW, serverFixture } from '../helpers/users.ts';
import { inboxConnection } from '../delivery/helpers.ts';

const f = serverFixture(['--http-port', '0', '--user-rate', '0', '--user-bytes', '0']);
const base = () => `http://127.0.0.1:${f.srv.server.httpPort}`;
const token = async (user: string) => {
  const r = await api(base(), 'POST', '/api/login', { user, password: PW });
  expect(r.status).toBe(200);
  return r.json.token as string;
};
const anError = (error: string) => ({ error, info: expect.any(String) });

describe('bearer routes', () => {
  it('every one answers 401 {"error":"not_logged_in","info"} as JSON without a token', async () => {
    const routes: [string, string, unknown?][] = [
      ['POST', '/api/logout'],
      ['GET', '/api/me'],
      ['GET', '/api/rooms'],
      ['POST', '/api/rooms/r/join'],
      ['POST', '/api/rooms/r/leave'],
      ['GET', '/api/rooms/r/messages?last=1'],
      ['POST', '/api/rooms/r/messages', { text: 'x' }],
      ['POST', '/api/send/someone', { command: 'x', args: [] }],
      ['GET', '/api/users/someone'],
      ['GET', '/api/inbox?after=0'],
    ];
    for (const [method, path, body] of routes) {
      const r = await api(base(), method, path, body);
      expect(r.status, `${method} ${path}`).toBe(401);
      expect(r.json, `${method} ${path}`).toEqual(anError('not_logged_in'));
      expect(r.headers.get('content-type')).toBe('application/json; charset=utf-8');
    }
  });
});

describe('JSON shapes', () => {
  it('login, me, rooms, post and users answer exactly their documented keys, names as registered', async () => {
    const [u, v] = await f.users('ShapeU', 'ShapeV');
    const login = await api(base(), 'POST', '/api/login', { user: u!.toLowerCase(), password: PW });
    expect(login.status).toBe(200);
    expect(login.json).toEqual({ user: u, token: expect.any(String) });
    const t = login.json.token as string;
    expect(await api(base(), 'GET', '/api/me', undefined, t)).toMatchObject({ status: 200, json: { user: u } });
    expect(Object.keys((await api(base(), 'GET', '/api/me', undefined, t)).json)).toEqual(['user']);
    for (const room of ['zz-shape', 'aa-shape', 'mm-shape']) expect((await api(base(), 'POST', `/api/rooms/${room}/join`, undefined, t)).status).toBe(204);
    expect((await api(base(), 'GET', '/api/rooms', undefined, t)).json).toEqual({ rooms: ['aa-shape', 'mm-shape', 'zz-shape'] });
    const posted = await api(base(), 'POST', '/api/rooms/aa-shape/messages', { text: 'hi' }, t);
    expect(posted.status).toBe(201);
    expect(posted.json).toEqual({ id: expect.any(Number), time: expect.any(Number) });
    expect(posted.json.id).toBeGreaterThan(0);
    const user = await api(base(), 'GET', `/api/users/${v!.toUpperCase()}`, undefined, t);
    expect(user.json).toEqual({ user: v, online: false, lastSeen: 0 });
    const page = await api(base(), 'GET', '/api/rooms/aa-shape/messages?after=0', undefined, t);
    expect(page.json.room).toBe('aa-shape');
    expect(page.json.messages).toEqual([{ id: posted.json.id, time: posted.json.time, user: u, text: 'hi' }]);
  });

  it('history limits and room names over HTTP are those of history: 400 syntax or invalid_room', async () => {
    const [u] = await f.users('hl');
    const t = await token(u!);
    expect((await api(base(), 'POST', '/api/rooms/hl-room/join', undefined, t)).status).toBe(204);
    for (const q of ['last=0', 'last=501', 'last=x', 'since=-1', 'after=-1', 'after=1.5', 'before=5&n=0', 'before=5&n=501', 'before=x&n=1']) {
      const r = await api(base(), 'GET', `/api/rooms/hl-room/messages?${q}`, undefined, t);
      expect(r.status, q).toBe(400);
      expect(r.json, q).toEqual(anError('syntax'));
    }
    for (const [method, path] of [
      ['GET', '/api/rooms/bad%20room/messages?last=1'],
      ['POST', '/api/rooms/bad%20room/leave'],
      ['POST', `/api/rooms/${'x'.repeat(65)}/join`],
    ] as const) {
      const r = await api(base(), method, path, undefined, t);
      expect(r.status, path).toBe(400);
      expect(r.json, path).toEqual(anError('invalid_room'));
    }
    expect(await api(base(), 'POST', '/api/rooms/never-joined-hl/messages', { text: 'x' }, t)).toMatchObject({ status: 403, json: anError('not_in_room') });
  });
});

describe('JSON in', () => {
  const raw = (path: string, headers: Record<string, string>, body?: string) =>
    fetch(base() + path, { method: 'POST', headers, body }).then(async (r) => ({ status: r.status, json: JSON.parse((await r.text()) || 'null') }));

  it('a JSON body is read whatever Content-Type labels it (fetch sends text/plain for a string)', async () => {
    const name = `ct${process.pid % 1000}${Date.now() % 10000}`;
    expect(await raw('/api/register', { 'content-type': 'text/plain;charset=UTF-8' }, JSON.stringify({ user: `${name}a`, password: PW }))).toEqual({
      status: 201,
      json: { user: `${name}a` },
    });
    expect(await raw('/api/register', {}, JSON.stringify({ user: `${name}b`, password: PW }))).toMatchObject({ status: 201 });
    expect(
      await raw('/api/register', { 'content-type': 'application/x-www-form-urlencoded' }, JSON.stringify({ user: `${name}c`, password: PW })),
    ).toMatchObject({ status: 201 });
    // what is not JSON is 400 syntax, never 415
    expect(await raw('/api/register', { 'content-type': 'application/json' }, '{not json')).toEqual({ status: 400, json: anError('syntax') });
    expect(await raw('/api/register', { 'content-type': 'text/plain' }, 'user=x')).toEqual({ status: 400, json: anError('syntax') });
    expect(await raw('/api/register', { 'content-type': 'application/x-www-form-urlencoded' }, 'user=x&password=y')).toEqual({
      status: 400,
      json: anError('syntax'),
    });
  });

  it('a route that takes no body answers as documented when the client still says application/json', async () => {
    const [u] = await f.users('nb');
    const t = await token(u!);
    const headers = { 'content-type': 'application/json', authorization: `Bearer ${t}` };
    expect((await raw('/api/rooms/nb-room/join', headers)).status).toBe(204);
    expect((await raw('/api/rooms/nb-room/join', headers, '')).status).toBe(204);
    expect((await raw('/api/rooms/nb-room/leave', headers, '{}')).status).toBe(204);
    expect((await raw('/api/logout', headers)).status).toBe(204);
  });
});

describe('HTTP and TCP are one server', () => {
  it('a send over HTTP reaches TCP with the protocol escaping, and its carbon lands in the sender inbox', async () => {
    const [u, v] = await f.users('hs', 'hsv');
    const t = await token(u!);
    const sender = await inboxConnection(f.srv.port, u!, '', '0', f.opened);
    const to = await f.loggedIn(v!);
    expect((await api(base(), 'POST', `/api/send/${v!.toUpperCase()}`, { command: 'msg', args: ['a,b', 'c\\d', ''] }, t)).status).toBe(204);
    expect(await to.next()).toBe(`send,${u},msg,a\\,b,c\\\\d,`);
    expect(await sender.c.next()).toBe(`inbox,1,sent,${v},msg,a\\,b,c\\\\d,`);
  });

  it('a room message posted over HTTP is pushed to TCP members with the protocol escaping', async () => {
    const [u, v] = await f.users('hp', 'hpv');
    const t = await token(u!);
    const room = `hp-${u}`;
    const member = await f.loggedIn(v!);
    member.send('join', room);
    await member.nextN(2);
    expect((await api(base(), 'POST', `/api/rooms/${room}/join`, undefined, t)).status).toBe(204);
    expect(await member.next()).toBe(`room,${room},joined,${u}`);
    const posted = await api(base(), 'POST', `/api/rooms/${room}/messages`, { text: 'x, y\\z' }, t);
    expect(await member.next()).toBe(`room,${room},msg,${posted.json.id},${posted.json.time},${u},x\\, y\\\\z`);
    expect((await api(base(), 'POST', `/api/rooms/${room}/leave`, undefined, t)).status).toBe(204);
    expect(await member.next()).toBe(`room,${room},left,${u}`);
  });
});

describe('Idempotency-Key', () => {
  const post = (path: string, body: unknown, t: string, key?: string) =>
    fetch(base() + path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${t}`, ...(key === undefined ? {} : { 'idempotency-key': key }) },
      body: JSON.stringify(body),
    }).then(async (r) => ({ status: r.status, text: await r.text() }));

  it('a recorded error answers the same on a repeat, even once the error is gone; keys are per user', async () => {
    const [u, w] = await f.users('ik', 'ikw');
    const t = await token(u!);
    const ghost = `ikghost${process.pid % 1000}${Date.now() % 1000}`;
    const first = await post(`/api/send/${ghost}`, { command: 'x' }, t, 'k1');
    expect(first.status).toBe(404);
    expect(JSON.parse(first.text)).toEqual(anError('user_not_found'));
    const c = await f.open();
    expect(await c.ask('register', ghost, PW)).toBe('ok');
    expect(await post(`/api/send/${ghost}`, { command: 'x' }, t, 'k1')).toEqual(first);
    // another user's k1 is another key
    const tw = await token(w!);
    expect((await post(`/api/send/${ghost}`, { command: 'x' }, tw, 'k1')).status).toBe(204);
    const g = await inboxConnection(f.srv.port, ghost, '', 'latest', f.opened);
    expect(g.head).toBe(1);
  });

  it('a repeated leave with the same key answers 204 again instead of 403, and pushes left once', async () => {
    const [u, v] = await f.users('il', 'ilv');
    const t = await token(u!);
    const room = `il-${u}`;
    const member = await f.loggedIn(v!);
    member.send('join', room);
    await member.nextN(2);
    expect((await post(`/api/rooms/${room}/join`, {}, t)).status).toBe(204);
    expect(await member.next()).toBe(`room,${room},joined,${u}`);
    expect((await post(`/api/rooms/${room}/leave`, {}, t, 'leave-1')).status).toBe(204);
    expect((await post(`/api/rooms/${room}/leave`, {}, t, 'leave-1')).status).toBe(204);
    expect((await post(`/api/rooms/${room}/leave`, {}, t)).status).toBe(403); // without the key it runs: not in the room
    expect(await member.next()).toBe(`room,${room},left,${u}`);
    expect(await member.ask('nop')).toBe('');
  });
});

describe('--friends-only over HTTP', () => {
  let own: TestServer;
  afterAll(async () => {
    await own?.stop();
    if (own) removeDir(own.data);
  });

  it('POST /api/send to a non-friend answers 403 not_friends, as send does', async () => {
    own = await startServer(['--http-port', '0', '--friends-only']);
    const b = `http://127.0.0.1:${own.server.httpPort}`;
    for (const user of ['fonly', 'fother']) expect((await api(b, 'POST', '/api/register', { user, password: PW })).status).toBe(201);
    const t = (await api(b, 'POST', '/api/login', { user: 'fonly', password: PW })).json.token as string;
    const r = await api(b, 'POST', '/api/send/fother', { command: 'x' }, t);
    expect(r.status).toBe(403);
    expect(r.json).toEqual(anError('not_friends'));
  });
});
