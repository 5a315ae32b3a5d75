/** GATEWAYS.md sections 2 to 4: every route, its errors and statuses, body limits, KFCR, health and metrics. */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { removeDir, spawnServer, startServer, tempDir, type TestServer } from '../helpers/server.ts';
import { RawConnection } from '../helpers/raw.ts';
import { eventually } from '../helpers/eventually.ts';
import { api } from '../helpers/ws.ts';
import { freshUsers, PW } from '../helpers/users.ts';

type Kfcr = { id: number; user: string; content: string; timestamp: number; sys: boolean };

let srv: TestServer;
let base: string;
const MAX = 2048;

beforeAll(async () => {
  srv = await startServer(['--http-port', '0', '--max-request', String(MAX), '--kfcr-room', 'kfcr-test']);
  base = `http://127.0.0.1:${srv.server.httpPort}`;
});

afterAll(async () => {
  await srv.stop();
  removeDir(srv.data);
});

async function token(user: string): Promise<string> {
  const r = await api(base, 'POST', '/api/login', { user, password: PW });
  expect(r.status).toBe(200);
  return r.json.token as string;
}

describe('accounts', () => {
  it('registers (201), refuses a taken name (409) and bad input (400), answers JSON', async () => {
    const r = await api(base, 'POST', '/api/register', { user: 'HttpUser', password: PW });
    expect(r.status).toBe(201);
    expect(r.json).toEqual({ user: 'HttpUser' });
    expect(r.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(await api(base, 'POST', '/api/register', { user: 'httpuser', password: PW })).toMatchObject({ status: 409, json: { error: 'name_taken' } });
    expect(await api(base, 'POST', '/api/register', { user: 'x', password: PW })).toMatchObject({ status: 400, json: { error: 'name_too_short' } });
    expect(await api(base, 'POST', '/api/register', { user: 'short-pw', password: 'x' })).toMatchObject({ status: 400, json: { error: 'password_too_short' } });
    expect(await api(base, 'POST', '/api/register', { user: 'nopw' })).toMatchObject({ status: 400, json: { error: 'syntax' } });
    expect(await api(base, 'POST', '/api/register', '{not json')).toMatchObject({ status: 400, json: { error: 'syntax' } });
  });

  it('logs in with a bearer token, /api/me answers, logout (204) ends the token', async () => {
    const [u] = await freshUsers(srv.port, 'me');
    expect(await api(base, 'POST', '/api/login', { user: u, password: 'wrong-password' })).toMatchObject({
      status: 401,
      json: { error: 'wrong_user_or_password' },
    });
    const t = await token(u!);
    expect(t.length).toBeGreaterThanOrEqual(22); // 128 bits or more
    expect(await api(base, 'GET', '/api/me', undefined, t)).toMatchObject({ status: 200, json: { user: u } });
    expect(await api(base, 'GET', '/api/me')).toMatchObject({ status: 401, json: { error: 'not_logged_in' } });
    expect(await api(base, 'GET', '/api/me', undefined, 'A'.repeat(43))).toMatchObject({ status: 401, json: { error: 'not_logged_in' } });
    expect((await api(base, 'POST', '/api/logout', undefined, t)).status).toBe(204);
    expect((await api(base, 'GET', '/api/me', undefined, t)).status).toBe(401);
  });

  it('answers 429 once logins are throttled', async () => {
    const own = await startServer(['--http-port', '0', '--login-fail-limit', '2']);
    const b = `http://127.0.0.1:${own.server.httpPort}`;
    const [u] = await freshUsers(own.port, 'thr');
    for (let i = 0; i < 2; i++) expect((await api(b, 'POST', '/api/login', { user: u, password: 'nope-nope' })).status).toBe(401);
    expect(await api(b, 'POST', '/api/login', { user: u, password: PW })).toMatchObject({ status: 429, json: { error: 'too_many_attempts' } });
    await own.stop();
    removeDir(own.data);
  });

  it('expires tokens after --token-ttl seconds', async () => {
    const own = await startServer(['--http-port', '0', '--token-ttl', '0.3']);
    const b = `http://127.0.0.1:${own.server.httpPort}`;
    const [u] = await freshUsers(own.port, 'ttl');
    const issuing = Date.now();
    const t = (await api(b, 'POST', '/api/login', { user: u, password: PW })).json.token;
    const issued = Date.now();
    // the server (in this process) reads the time from Date: the test sets it instead of waiting
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(issuing + 299);
      expect((await api(b, 'GET', '/api/me', undefined, t)).status).toBe(200);
      vi.setSystemTime(issued + 300);
      expect((await api(b, 'GET', '/api/me', undefined, t)).status).toBe(401);
    } finally {
      vi.useRealTimers();
    }
    await own.stop();
    removeDir(own.data);
  });
});

describe('rooms over HTTP', () => {
  it('join, list, post, read with every query, leave; errors map to statuses', async () => {
    const [u, other] = await freshUsers(srv.port, 'hr', 'ho');
    const t = await token(u!);
    const room = `h-${u}`;
    expect((await api(base, 'GET', `/api/rooms/${room}/messages`, undefined, t)).status).toBe(403);
    expect(await api(base, 'POST', '/api/rooms/bad%20room/join', undefined, t)).toMatchObject({ status: 400, json: { error: 'invalid_room' } });
    expect((await api(base, 'POST', `/api/rooms/${room}/join`, undefined, t)).status).toBe(204);
    expect(await api(base, 'GET', '/api/rooms', undefined, t)).toMatchObject({ status: 200, json: { rooms: [room] } });
    const ids: { id: number; time: number }[] = [];
    for (const text of ['one', 'two', 'three']) {
      const r = await api(base, 'POST', `/api/rooms/${room}/messages`, { text }, t);
      expect(r.status).toBe(201);
      ids.push(r.json);
    }
    const texts = async (q: string) => {
      const r = await api(base, 'GET', `/api/rooms/${room}/messages${q}`, undefined, t);
      expect(r.status).toBe(200);
      expect(r.json.room).toBe(room);
      return r.json.messages.map((m: { text: string }) => m.text);
    };
    expect(await texts('?last=2')).toEqual(['two', 'three']);
    expect(await texts(`?after=${ids[0]!.id}`)).toEqual(['two', 'three']);
    expect(await texts(`?before=${ids[2]!.id}&n=1`)).toEqual(['two']);
    const since = await texts(`?since=${ids[1]!.time}`);
    expect(since.slice(-2)).toEqual(['two', 'three']); // 'one' too when it shares the millisecond
    const full = await api(base, 'GET', `/api/rooms/${room}/messages?last=1`, undefined, t);
    expect(full.json.messages).toEqual([{ id: ids[2]!.id, time: ids[2]!.time, user: u, text: 'three' }]);
    expect(await api(base, 'GET', `/api/rooms/${room}/messages?last=0`, undefined, t)).toMatchObject({ status: 400, json: { error: 'syntax' } });
    expect((await api(base, 'POST', `/api/rooms/${room}/messages`, { nope: 1 }, t)).status).toBe(400);
    const ot = await token(other!);
    expect(await api(base, 'POST', `/api/rooms/${room}/messages`, { text: 'x' }, ot)).toMatchObject({ status: 403, json: { error: 'not_in_room' } });
    expect((await api(base, 'POST', `/api/rooms/${room}/leave`, undefined, t)).status).toBe(204);
    expect(await api(base, 'POST', `/api/rooms/${room}/leave`, undefined, t)).toMatchObject({ status: 403, json: { error: 'not_in_room' } });
  });
});

describe('users and send over HTTP', () => {
  it('GET /api/users/:user tells presence and last seen; 404 for nobody', async () => {
    const [u, v] = await freshUsers(srv.port, 'pu', 'pv');
    const t = await token(u!);
    expect(await api(base, 'GET', `/api/users/${v}`, undefined, t)).toMatchObject({ status: 200, json: { user: v, online: false, lastSeen: 0 } });
    const c = await RawConnection.open(srv.port);
    expect(await c.ask('login', v!, PW)).toBe('ok');
    expect(await api(base, 'GET', `/api/users/${v!.toUpperCase()}`, undefined, t)).toMatchObject({ json: { user: v, online: true } });
    c.close();
    // offline once the server saw the close; last seen once its write committed
    await eventually(async () => {
      const after = await api(base, 'GET', `/api/users/${v}`, undefined, t);
      expect(after.json.online).toBe(false);
      expect(after.json.lastSeen).toBeGreaterThan(0);
    });
    expect(await api(base, 'GET', '/api/users/nobody-here', undefined, t)).toMatchObject({ status: 404, json: { error: 'user_not_found' } });
  });

  it('POST /api/send/:user stores for offline users; 404 and 400 for bad input', async () => {
    const [u, v] = await freshUsers(srv.port, 'su', 'sv');
    const t = await token(u!);
    expect((await api(base, 'POST', `/api/send/${v}`, { command: 'msg', args: ['stored'] }, t)).status).toBe(204);
    expect((await api(base, 'POST', '/api/send/nobody-here', { command: 'msg' }, t)).status).toBe(404);
    expect((await api(base, 'POST', `/api/send/${v}`, { args: ['x'] }, t)).status).toBe(400);
    expect((await api(base, 'POST', `/api/send/${v}`, { command: 'msg', args: [1] }, t)).status).toBe(400);
    const c = await RawConnection.open(srv.port);
    c.send('login', v!, PW);
    expect(await c.nextN(2)).toEqual(['ok', `send,${u},msg,stored`]);
    c.close();
  });

  it('answers 413 for a body over --max-request and 404 for unknown routes', async () => {
    const [u] = await freshUsers(srv.port, 'big');
    const t = await token(u!);
    const big = await api(base, 'POST', `/api/send/${u}`, { command: 'msg', args: ['x'.repeat(MAX)] }, t);
    expect(big).toMatchObject({ status: 413, json: { error: 'request_too_long' } });
    expect(await api(base, 'GET', '/api/nothing-here')).toMatchObject({ status: 404, json: { error: 'command_not_found' } });
  });
});

describe('KFCR compatibility', () => {
  it("runs KFCR's client flow: verify, post, poll sinceid; a TCP member sees the posts", async () => {
    const [member] = await freshUsers(srv.port, 'kf');
    const tcp = await RawConnection.open(srv.port);
    expect(await tcp.ask('login', member!, PW)).toBe('ok');
    tcp.send('join', 'kfcr-test');
    await tcp.nextN(2);
    const verify = await fetch(`${base}/KFCR_verification`);
    expect(verify.status).toBe(200);
    expect(await verify.text()).toBe('KFCR verified!');
    expect(verify.headers.get('access-control-allow-origin')).toBe('*');
    const since0 = (await (await fetch(`${base}/messages/sinceid/0`)).json()) as { id: number }[];
    const lastId = since0.length === 0 ? 0 : since0.at(-1)!.id;
    const post = await fetch(`${base}/messages/post`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: member, content: 'hello from kfcr', extra: true }),
    });
    expect(post.status).toBe(201);
    expect(await post.text()).toBe('message successfully sent!');
    const pushed = await tcp.next();
    expect(pushed).toMatch(new RegExp(`^room,kfcr-test,msg,\\d+,\\d+,~${member},hello from kfcr$`));
    tcp.send('say', 'kfcr-test', 'hello from tcp');
    await tcp.nextN(2);
    const polled = (await (await fetch(`${base}/messages/sinceid/${lastId}`)).json()) as Kfcr[];
    expect(polled.map((m: { user: string; content: string; sys: boolean }) => [m.user, m.content, m.sys])).toEqual([
      [member, 'hello from kfcr', false],
      [member, 'hello from tcp', false],
    ]);
    const [first] = polled;
    expect(Object.keys(first!).sort()).toEqual(['content', 'id', 'sys', 'timestamp', 'user']);
    expect(await (await fetch(`${base}/messages/id/${first!.id}`)).json()).toEqual(first);
    const last = (await (await fetch(`${base}/messages/last/2`)).json()) as Kfcr[];
    expect(last.map((m: { content: string }) => m.content)).toEqual(['hello from tcp', 'hello from kfcr']);
    const since = (await (await fetch(`${base}/messages/since/${first!.timestamp}`)).json()) as Kfcr[];
    expect(since[0]!.id).toBe(first!.id);
    tcp.close();
  });

  it('stores a number or boolean posted as user or content as text, as the reference (Python str()) does', async () => {
    const post = (body: object) => fetch(`${base}/messages/post`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    expect((await post({ user: 42, content: 7 })).status).toBe(201);
    expect((await post({ user: 'flag', content: true })).status).toBe(201);
    const last = (await (await fetch(`${base}/messages/last/2`)).json()) as { user: string; content: string }[];
    expect(last.map((m) => [m.user, m.content])).toEqual([
      ['flag', 'True'],
      ['42', '7'],
    ]);
  });

  it("answers KFCR's error texts", async () => {
    const get = async (path: string) => {
      const r = await fetch(base + path);
      return [r.status, await r.text()];
    };
    expect(await get('/messages/last/abc')).toEqual([400, 'Invalid message number']);
    expect(await get('/messages/since/abc')).toEqual([400, 'Bad timestamp']);
    expect(await get('/messages/sinceid/x')).toEqual([400, 'invalid ID']);
    expect(await get('/messages/id/x')).toEqual([400, 'invalid ID']);
    expect(await get('/messages/id/999999999')).toEqual([404, 'no message with requested ID']);
    const bad = await fetch(`${base}/messages/post`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'x' }) });
    expect([bad.status, await bad.text()]).toEqual([400, 'Malformed message JSON']);
    const nested = await fetch(`${base}/messages/post`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'x', content: ['a'] }) });
    expect([nested.status, await nested.text()]).toEqual([400, 'Malformed message JSON']);
    expect(await get('/version/release')).toEqual([200, 'S']);
    expect((await get('/version/number'))[1]).toMatch(/^\d+\.\d+\.\d+$/);
    expect(await get('/version/branch')).toEqual([200, 'main']);
    expect((await get('/version'))[1]).toMatch(/^S\d+\.\d+\.\d+-main$/);
    const many = (await (await fetch(`${base}/messages/last/100000`)).json()) as Kfcr[];
    expect(many.length).toBeLessThanOrEqual(500);
  });
});

describe('health and metrics', () => {
  it('/healthz and /readyz answer 200 while serving', async () => {
    expect(await (await fetch(`${base}/healthz`)).text()).toBe('ok');
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
  });

  it('/metrics is Prometheus text and its counters move when commands run', async () => {
    const scrape = async () => {
      const text = await (await fetch(`${base}/metrics`)).text();
      const values = new Map<string, number>();
      for (const line of text.split('\n')) {
        if (line === '' || line.startsWith('#')) continue;
        const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
        expect(m, line).not.toBeNull();
        values.set(m![1]!, Number(m![2]));
      }
      return values;
    };
    const before = await scrape();
    for (const name of [
      'textserver_connections{transport="tcp"}',
      'textserver_argon2_queue_length',
      'nodejs_eventloop_lag_seconds',
      'textserver_slow_consumer_disconnects_total',
      'textserver_login_failures_total',
    ]) {
      expect(before.has(name), name).toBe(true);
    }
    const c = await RawConnection.open(srv.port);
    for (let i = 0; i < 3; i++) expect(await c.ask('nop')).toBe('');
    expect(await c.ask('login', 'nobody-here', 'x')).toMatch(/wrong_user_or_password/);
    const after = await scrape();
    expect(after.get('textserver_connections{transport="tcp"}')).toBe((before.get('textserver_connections{transport="tcp"}') ?? 0) + 1);
    const nops = (m: Map<string, number>) => m.get('textserver_commands_total{command="nop",outcome="ok"}') ?? 0;
    expect(nops(after) - nops(before)).toBe(3);
    expect(after.get('textserver_commands_total{command="login",outcome="wrong_user_or_password"}')).toBeGreaterThanOrEqual(1);
    expect(after.get('textserver_login_failures_total')! - before.get('textserver_login_failures_total')!).toBe(1);
    expect(after.get('textserver_frames_total{direction="in"}')! - before.get('textserver_frames_total{direction="in"}')!).toBe(4);
    expect(after.get('textserver_command_duration_seconds_count{command="nop"}')).toBeGreaterThanOrEqual(3);
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(text).not.toMatch(/user="/);
    c.close();
  });

  it('/readyz turns 503 while a SIGTERM drain is in progress', async () => {
    const data = tempDir();
    const s = await spawnServer(['--data', data, '--http-port', '0', '--argon2-memory-kib', '65536', '--argon2-time', '12']);
    const httpLine = await s.waitForLine(/"transport":"http"/);
    const b = `http://127.0.0.1:${(JSON.parse(httpLine) as { port: number }).port}`;
    expect((await fetch(`${b}/readyz`)).status).toBe(200);
    const c = await RawConnection.open(s.port);
    c.send('register', 'slowhash', PW); // in flight: the drain waits for it
    // the server has read the request (and started it) once it counted the frame
    await eventually(async () => expect(await (await fetch(`${b}/metrics`)).text()).toMatch(/^textserver_frames_total\{direction="in"\} 1$/m));
    s.proc.kill('SIGTERM');
    await s.waitForLine(/shutting down/);
    expect((await fetch(`${b}/readyz`)).status).toBe(503); // the hash (about a second) is still running
    expect((await fetch(`${b}/healthz`)).status).toBe(200);
    expect(await c.nextN(2, 10_000)).toEqual(['ok', expect.stringMatching(/^error,fatal,shutdown/)]);
    expect(await s.exited).toBe(0);
    removeDir(data);
  });
});
