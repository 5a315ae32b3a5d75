/**
 * GATEWAYS.md section 2 at its edges, as a third-party HTTP client meets
 * them: every refusal in the `{"error","info"}` shape (node's and fastify's
 * own included), 405s on KFCR routes with KFCR's CORS, RFC 6750's error
 * code only for a bearer token, Retry-After on 429, logins and whoami over
 * HTTP counted in /metrics, one Idempotency-Key at most and none reused by
 * another request, history queries that exclude each other and pages of
 * exactly the documented keys, and `--http-port 0` next to `--ws-port 0`
 * as a listener of its own.
 */
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { removeDir, startServer } from '../helpers/server.ts';
import { api } from '../helpers/ws.ts';
import { PW, serverFixture } from '../helpers/users.ts';

const f = serverFixture(['--http-port', '0', '--user-rate', '0', '--user-bytes', '0', '--login-fail-limit', '2', '--login-fail-window', '42', '--history-max-bytes', '300']);
const base = () => `http://127.0.0.1:${f.srv.server.httpPort}`;
const token = async (user: string) => (await api(base(), 'POST', '/api/login', { user, password: PW })).json.token as string;
const anError = (error: string) => ({ error, info: expect.any(String) });
const JSON_TYPE = 'application/json; charset=utf-8';

/** One request written as is (what fetch cannot send: repeated headers, a broken head); the answer once the server closes or it is complete. */
function rawHttp(request: string): Promise<{ status: number; head: string; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(f.srv.server.httpPort!, '127.0.0.1', () => socket.write(request));
    let text = '';
    const done = () => {
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return false;
      const head = text.slice(0, end);
      const length = Number(/^content-length: *(\d+)/im.exec(head)?.[1] ?? NaN);
      const body = text.slice(end + 4);
      if (Buffer.byteLength(body) < length) return false;
      socket.destroy();
      resolve({ status: Number(head.split(' ')[1]), head, body });
      return true;
    };
    socket.on('data', (d) => {
      text += d.toString('utf8');
      done();
    });
    socket.on('close', () => done() || reject(new Error(`closed after ${JSON.stringify(text)}`)));
    socket.on('error', () => {});
  });
}

describe('refusals before any route runs answer {"error","info"} as JSON', () => {
  it('a bad %-escape in the path is 400 syntax, not fastify\'s own body', async () => {
    const t = await token((await f.users('Esc'))[0]!);
    const r = await api(base(), 'GET', '/api/users/%ZZ', undefined, t);
    expect(r.status).toBe(400);
    expect(r.json).toEqual(anError('syntax'));
    expect(r.headers.get('content-type')).toBe(JSON_TYPE);
  });

  it('a long path segment still reaches its route (404 user_not_found); an absurd one is 414 request_too_long', async () => {
    const t = await token((await f.users('Long'))[0]!);
    const long = await api(base(), 'GET', `/api/users/${'b'.repeat(200)}`, undefined, t);
    expect(long.status).toBe(404);
    expect(long.json).toEqual(anError('user_not_found'));
    const absurd = await api(base(), 'GET', `/api/users/${'b'.repeat(2000)}`, undefined, t);
    expect(absurd.status).toBe(414);
    expect(absurd.json).toEqual(anError('request_too_long'));
  });

  it('a request node cannot parse gets 400 syntax as JSON, then the connection closes', async () => {
    const r = await rawHttp('POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n');
    expect(r.status).toBe(400);
    expect(r.head).toMatch(/^content-type: application\/json; charset=utf-8$/im);
    expect(JSON.parse(r.body)).toEqual(anError('syntax'));
  });

  it('a request head over node\'s limit gets 431 request_too_long as JSON', async () => {
    const r = await rawHttp(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(r.status).toBe(431);
    expect(JSON.parse(r.body)).toEqual(anError('request_too_long'));
  });
});

describe('KFCR routes (GATEWAYS.md section 3: CORS on error replies too)', () => {
  it('a wrong method on a KFCR route is 405 with Allow and Access-Control-Allow-Origin: *', async () => {
    for (const [method, path, allow] of [
      ['DELETE', '/messages/last/5', 'GET, HEAD, OPTIONS'],
      ['PUT', '/messages/post', 'POST, OPTIONS'],
      ['POST', '/KFCR_verification', 'GET, HEAD, OPTIONS'],
    ] as const) {
      const r = await fetch(base() + path, { method, headers: { origin: 'http://kfcr.example' } });
      expect(r.status, `${method} ${path}`).toBe(405);
      expect(r.headers.get('allow'), `${method} ${path}`).toBe(allow);
      expect(r.headers.get('access-control-allow-origin'), `${method} ${path}`).toBe('*');
    }
    // the API's own routes do not turn CORS on
    expect((await fetch(`${base()}/api/me`, { method: 'DELETE' })).headers.get('access-control-allow-origin')).toBeNull();
  });
});

describe('RFC 6750 and RFC 6585 details', () => {
  it('a 401 names error="invalid_token" only when a bearer token was offered, not for another scheme', async () => {
    const basic = await fetch(`${base()}/api/me`, { headers: { authorization: 'Basic dXNlcjpwYXNz' } });
    expect(basic.status).toBe(401);
    expect(basic.headers.get('www-authenticate')).toBe('Bearer realm="textserver"');
    const bad = await fetch(`${base()}/api/me`, { headers: { authorization: `Bearer ${'z'.repeat(43)}` } });
    expect(bad.status).toBe(401);
    expect(bad.headers.get('www-authenticate')).toBe('Bearer realm="textserver", error="invalid_token"');
  });

  it('a 429 says Retry-After: the login throttle window at most', async () => {
    const [u] = await f.users('Throttled');
    let r = await api(base(), 'POST', '/api/login', { user: u, password: 'wrong-password' });
    for (let i = 0; i < 5 && r.status !== 429; i++) r = await api(base(), 'POST', '/api/login', { user: u, password: 'wrong-password' });
    expect(r.status).toBe(429);
    expect(r.json).toEqual(anError('too_many_attempts'));
    expect(r.headers.get('retry-after')).toBe('42');
  });
});

describe('/metrics counts the HTTP API like TCP (README: every route runs the command a TCP client would)', () => {
  it('POST /api/login is a login, ok or refused, and GET /api/me a whoami', async () => {
    const value = async (series: string) => {
      const line = (await (await fetch(`${base()}/metrics`)).text()).split('\n').find((l) => l.startsWith(`${series} `));
      return line === undefined ? 0 : Number(line.split(' ')[1]);
    };
    const series = [
      'textserver_commands_total{command="login",outcome="ok"}',
      'textserver_commands_total{command="login",outcome="wrong_user_or_password"}',
      'textserver_commands_total{command="whoami",outcome="ok"}',
      'textserver_command_duration_seconds_count{command="login"}',
    ];
    const read = () => Promise.all(series.map(value));
    const [u] = await f.users('Counted');
    const before = await read();
    const t = await token(u!);
    expect((await api(base(), 'POST', '/api/login', { user: 'nobody-counted', password: 'wrong-password' })).status).toBe(401);
    expect((await api(base(), 'GET', '/api/me', undefined, t)).json).toEqual({ user: u });
    expect(await read()).toEqual([before[0]! + 1, before[1]! + 1, before[2]! + 1, before[3]! + 2]);
  });
});

describe('Idempotency-Key (DELIVERY.md section 3)', () => {
  it('two Idempotency-Key headers are 400 syntax, not one key made of both', async () => {
    const [u] = await f.users('TwoKeys');
    const t = await token(u!);
    expect((await api(base(), 'POST', '/api/rooms/two-keys/join', undefined, t)).status).toBe(204);
    const say = (keys: string[]) =>
      rawHttp(
        `POST /api/rooms/two-keys/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t}\r\n${keys.map((k) => `Idempotency-Key: ${k}\r\n`).join('')}Content-Type: application/json\r\nContent-Length: 12\r\n\r\n{"text":"x"}`,
      );
    const two = await say(['k1', 'k2']);
    expect(two.status).toBe(400);
    expect(JSON.parse(two.body)).toEqual(anError('syntax'));
    // nothing was said, and the pair was not recorded as the key "k1, k2"
    expect((await api(base(), 'GET', '/api/rooms/two-keys/messages?last=5', undefined, t)).json.messages).toEqual([]);
    const joined = await say(['k1, k2']);
    expect(joined.status).toBe(201);
  });
});

describe('an Idempotency-Key first used by another request', () => {
  it('is 422 key_reused when the recorded answer does not fit the route, instead of a success that did nothing', async () => {
    const [u] = await f.users('Reused');
    const t = await token(u!);
    const keyed = (path: string, key: string, body?: unknown) =>
      fetch(base() + path, {
        method: 'POST',
        headers: { authorization: `Bearer ${t}`, 'idempotency-key': key, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    expect((await keyed('/api/rooms/reused/join', 'k-join')).status).toBe(204);
    const post = await keyed('/api/rooms/reused/messages', 'k-join', { text: 'never said' });
    expect(post.status).toBe(422);
    expect(await post.json()).toEqual(anError('key_reused'));
    const said = await keyed('/api/rooms/reused/messages', 'k-say', { text: 'said once' });
    expect(said.status).toBe(201);
    // the post's answer does not fit a leave, nor a post to another room
    expect((await keyed('/api/rooms/reused/leave', 'k-say')).status).toBe(422);
    expect((await api(base(), 'POST', '/api/rooms/other-reused/join', undefined, t)).status).toBe(204);
    expect((await keyed('/api/rooms/other-reused/messages', 'k-say', { text: 'said once' })).status).toBe(422);
    // nothing of the refused requests happened: still a member, one message in the room
    const page = await api(base(), 'GET', '/api/rooms/reused/messages', undefined, t);
    expect(page.json.messages.map((m: { text: string }) => m.text)).toEqual(['said once']);
    // a true retry still gets the first answer
    const again = await keyed('/api/rooms/reused/messages', 'k-say', { text: 'said once' });
    expect([again.status, await again.json()]).toEqual([201, await said.json()]);
  });
});

describe('history over HTTP', () => {
  it('?last, ?since, ?after and ?before exclude each other, and ?n goes with ?before: 400 syntax', async () => {
    const [u] = await f.users('Query');
    const t = await token(u!);
    expect((await api(base(), 'POST', '/api/rooms/queries/join', undefined, t)).status).toBe(204);
    for (const q of ['last=2&since=0', 'after=0&before=9', 'since=0&after=0', 'n=5', 'last=3&n=5']) {
      const r = await api(base(), 'GET', `/api/rooms/queries/messages?${q}`, undefined, t);
      expect(r.status, q).toBe(400);
      expect(r.json, q).toEqual(anError('syntax'));
    }
    for (const q of ['', 'last=2', 'since=0', 'after=0', 'before=9', 'before=9&n=2'])
      expect((await api(base(), 'GET', `/api/rooms/queries/messages?${q}`, undefined, t)).status, q).toBe(200);
  });
});

describe('history pages over HTTP', () => {
  it('a whole page is exactly {"room","messages"}; one cut at --history-max-bytes adds "more": true', async () => {
    const [u] = await f.users('Pages');
    const t = await token(u!);
    expect((await api(base(), 'POST', '/api/rooms/pages/join', undefined, t)).status).toBe(204);
    for (const n of [1, 2, 3]) expect((await api(base(), 'POST', '/api/rooms/pages/messages', { text: `${n}`.repeat(120) }, t)).status).toBe(201);
    const whole = await api(base(), 'GET', '/api/rooms/pages/messages?last=1', undefined, t);
    expect(whole.json).toEqual({ room: 'pages', messages: [{ id: expect.any(Number), time: expect.any(Number), user: u, text: '3'.repeat(120) }] });
    const cut = await api(base(), 'GET', '/api/rooms/pages/messages?last=3', undefined, t);
    expect(Object.keys(cut.json)).toEqual(['room', 'messages', 'more']);
    expect(cut.json.more).toBe(true);
    expect(cut.json.messages.length).toBeLessThan(3);
  });
});

describe('--http-port 0 with --ws-port 0', () => {
  it('opens two listeners on two free ports: HTTP on one, the WebSocket on the other', async () => {
    const s = await startServer(['--ws-port', '0', '--http-port', '0']);
    try {
      const { wsPort, httpPort } = s.server;
      expect(httpPort).not.toBe(wsPort);
      expect((await fetch(`http://127.0.0.1:${httpPort}/healthz`)).status).toBe(200);
      // the WebSocket-only port serves /ws alone
      expect((await fetch(`http://127.0.0.1:${wsPort}/healthz`)).status).toBe(404);
      expect((await fetch(`http://127.0.0.1:${wsPort}/ws`)).status).toBe(426);
    } finally {
      await s.stop();
      removeDir(s.data);
    }
  });
});
