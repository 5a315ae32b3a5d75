/**
 * Issue 12 against the HTTP gateway: RFC 9110 / RFC 6750 details, TLS
 * suites, Prometheus exposition rules, and what the unchanged KFCR client
 * needs (user as posted, CORS everywhere, Python int() numbers).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, startServer, tempDir, type TestServer } from '../helpers/server.ts';
import { api } from '../helpers/ws.ts';
import { freshUsers, PW } from '../helpers/users.ts';

let srv: TestServer;
let base: string;
const MAX = 2048;

beforeAll(async () => {
  srv = await startServer(['--http-port', '0', '--max-request', String(MAX), '--kfcr-room', 'kfcr-std']);
  base = `http://127.0.0.1:${srv.server.httpPort}`;
});

afterAll(async () => {
  await srv.stop();
  removeDir(srv.data);
});

/** Sends raw bytes, returns everything the server answered until it closed or `enough` held. */
function rawHttp(port: number, request: string, enough: (answer: string) => boolean = () => false): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' }, () => socket.write(request));
    let answer = '';
    socket.on('data', (d: Buffer) => {
      answer += d.toString('latin1');
      if (enough(answer)) socket.destroy();
    });
    socket.on('error', () => {});
    socket.on('close', () => resolve(answer));
  });
}

async function tokenFor(user: string): Promise<string> {
  return (await api(base, 'POST', '/api/login', { user, password: PW })).json.token as string;
}

async function get(path: string, authorization?: string): Promise<Response> {
  return fetch(base + path, { headers: authorization === undefined ? {} : { authorization } });
}

describe('RFC 6750 and RFC 9110', () => {
  it('takes the Bearer scheme in any case and with extra spaces', async () => {
    const [u] = await freshUsers(srv.port, 'bear');
    const t = await tokenFor(u!);
    for (const header of [`Bearer ${t}`, `bearer ${t}`, `BEARER   ${t}  `, `  Bearer\t${t}`]) {
      expect((await get('/api/me', header)).status, JSON.stringify(header)).toBe(200);
    }
    expect((await get('/api/me', `Basic ${t}`)).status).toBe(401);
  });

  it('a 401 says WWW-Authenticate: Bearer, with invalid_token when a token was refused', async () => {
    const none = await get('/api/me');
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer realm="textserver"$/);
    const wrong = await get('/api/me', `Bearer ${'A'.repeat(43)}`);
    expect(wrong.headers.get('www-authenticate')).toMatch(/^Bearer .*error="invalid_token"/);
    const login = await api(base, 'POST', '/api/login', { user: 'nobody-at-all', password: 'whatever1' });
    expect(login.status).toBe(401);
    expect(login.headers.get('www-authenticate')).toMatch(/^Bearer/);
  });

  it('a wrong method on an existing route is 405 with Allow; an unknown route stays 404', async () => {
    const login = await fetch(`${base}/api/login`);
    expect(login.status).toBe(405);
    expect(login.headers.get('allow')).toBe('POST');
    const health = await fetch(`${base}/healthz`, { method: 'DELETE' });
    expect(health.status).toBe(405);
    expect(health.headers.get('allow')).toBe('GET, HEAD');
    expect((await fetch(`${base}/api/rooms/x/messages`, { method: 'PUT' })).headers.get('allow')).toBe('GET, HEAD, POST');
    expect((await fetch(`${base}/no/such/route`, { method: 'DELETE' })).status).toBe(404);
  });

  it('an oversize body announced with Expect: 100-continue gets 413 before any 100 Continue', async () => {
    const head = (length: number) =>
      `POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\nExpect: 100-continue\r\n\r\n`;
    const big = await rawHttp(srv.server.httpPort!, head(MAX + 1), (a) => a.includes('\r\n\r\n'));
    expect(big.split('\r\n')[0]).toBe('HTTP/1.1 413 Payload Too Large');
    expect(big).not.toMatch(/100 Continue/);
    // a body within the limit is asked for, and answered
    const body = JSON.stringify({ user: 'x' });
    const socket = net.connect({ port: srv.server.httpPort!, host: '127.0.0.1' });
    let answer = '';
    await new Promise<void>((resolve) => {
      socket.on('connect', () => socket.write(head(body.length)));
      socket.on('data', (d: Buffer) => {
        answer += d.toString('latin1');
        if (answer === 'HTTP/1.1 100 Continue\r\n\r\n') socket.write(body);
        if (/\r\n\r\n.*\}$/s.test(answer.slice(25))) resolve();
      });
    });
    socket.destroy();
    expect(answer).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 400 /);
  });
});

describe('TLS suites', () => {
  it('offers only forward-secret AEAD suites on TLS 1.2, TLS 1.3 as node does, nothing older', async () => {
    const dir = tempDir('textserver-rsa-');
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    // an RSA key: the one kind that could also do static RSA key exchange, which must not be offered
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost'], {
      stdio: 'ignore',
    });
    const s = await startServer(['--tls-cert', cert, '--tls-key', key, '--http-port', '0']);
    const handshake = (port: number, options: tls.ConnectionOptions) =>
      new Promise<string>((resolve) => {
        const socket = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, ...options });
        socket.once('secureConnect', () => (resolve(`${socket.getProtocol()} ${socket.getCipher().name}`), socket.destroy()));
        socket.once('error', () => resolve('refused'));
      });
    for (const port of [s.port, s.server.httpPort!]) {
      const v12 = (ciphers: string) => handshake(port, { ciphers, maxVersion: 'TLSv1.2' });
      expect(await v12('AES128-GCM-SHA256'), 'static RSA key exchange').toBe('refused');
      expect(await v12('AES256-SHA256:AES128-SHA'), 'static RSA, CBC').toBe('refused');
      expect(await v12('ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA384'), 'CBC').toBe('refused');
      expect(await v12('DHE-RSA-AES128-GCM-SHA256'), 'finite-field DHE').toBe('refused');
      expect(await v12('ECDHE-RSA-AES128-GCM-SHA256')).toBe('TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256');
      expect(await v12('ECDHE-RSA-CHACHA20-POLY1305')).toBe('TLSv1.2 ECDHE-RSA-CHACHA20-POLY1305');
      expect(await handshake(port, {})).toMatch(/^TLSv1\.3 TLS_/);
      expect(await handshake(port, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' })).toBe('refused');
    }
    await s.stop();
    removeDir(s.data);
    removeDir(dir);
  });
});

/** The exposition format's rules that promtool checks (naming, TYPE and HELP, histogram buckets). */
function lintMetrics(text: string): string[] {
  const problems: string[] = [];
  const types = new Map<string, string>();
  const infBuckets = new Map<string, Set<string>>();
  const seriesOfHistogram = new Map<string, Set<string>>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta !== null) {
      const [, kind, name, rest] = meta;
      if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(name!)) problems.push(`bad name ${name}`);
      if (kind === 'TYPE') {
        if (types.has(name!)) problems.push(`${name} typed twice`);
        types.set(name!, rest!);
        if (rest === 'counter' && !name!.endsWith('_total')) problems.push(`counter ${name} should end in _total`);
        if (rest !== 'counter' && name!.endsWith('_total')) problems.push(`${rest} ${name} should not end in _total`);
      }
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (sample === null) {
      problems.push(`unparsable line ${line}`);
      continue;
    }
    const [, name, , labels = '', value] = sample;
    if (Number.isNaN(Number(value)) && !['+Inf', '-Inf', 'NaN'].includes(value!)) problems.push(`bad value in ${line}`);
    const pairs = [...labels.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)];
    if (new Set(pairs.map((p) => p[1])).size !== pairs.length) problems.push(`duplicate label in ${line}`);
    const histogram = /^(.*)_(bucket|sum|count)$/.exec(name!);
    const family = histogram !== null && types.get(histogram[1]!) === 'histogram' ? histogram[1]! : name!;
    if (!types.has(family)) problems.push(`${name} has no TYPE`);
    if (family !== name && histogram !== null) {
      const series = pairs
        .filter((p) => p[1] !== 'le')
        .map((p) => p[0])
        .join(',');
      if (!seriesOfHistogram.has(family)) seriesOfHistogram.set(family, new Set());
      seriesOfHistogram.get(family)!.add(series);
      if (histogram[2] === 'bucket' && pairs.some((p) => p[1] === 'le' && p[2] === '+Inf')) {
        if (!infBuckets.has(family)) infBuckets.set(family, new Set());
        infBuckets.get(family)!.add(series);
      }
    }
  }
  for (const [family, series] of seriesOfHistogram)
    for (const s of series) if (!infBuckets.get(family)?.has(s)) problems.push(`${family}{${s}} has no +Inf bucket`);
  return problems;
}

describe('Prometheus', () => {
  it('/metrics follows the exposition rules promtool checks (and promtool passes, when installed)', async () => {
    const [u] = await freshUsers(srv.port, 'prom');
    await api(base, 'GET', '/api/rooms', undefined, await tokenFor(u!));
    const text = await (await get('/metrics')).text();
    expect(lintMetrics(text)).toEqual([]);
    expect(text).not.toMatch(/^nodejs_active_\w+_total/m);
    expect(text).toMatch(/^nodejs_active_handles\{type="\w+"\} \d+/m);
    if (spawnSync('promtool', ['--version']).status === 0) {
      const check = spawnSync('promtool', ['check', 'metrics'], { input: text });
      expect(`${check.stdout}${check.stderr}`).toBe('');
      expect(check.status).toBe(0);
    }
  });

  it('counts commands run through the HTTP API like TCP ones, outcome and duration', async () => {
    const [u] = await freshUsers(srv.port, 'cnt');
    const t = await tokenFor(u!);
    const value = async (series: string) => {
      const line = (await (await get('/metrics')).text()).split('\n').find((l) => l.startsWith(`${series} `));
      return line === undefined ? 0 : Number(line.split(' ')[1]);
    };
    const joins = 'textserver_commands_total{command="join",outcome="ok"}';
    const notIn = 'textserver_commands_total{command="say",outcome="not_in_room"}';
    const durations = 'textserver_command_duration_seconds_count{command="join"}';
    const before = [await value(joins), await value(notIn), await value(durations)];
    expect((await api(base, 'POST', '/api/rooms/counted/join', undefined, t)).status).toBe(204);
    expect(await api(base, 'POST', '/api/rooms/elsewhere/messages', { text: 'x' }, t)).toMatchObject({ status: 403, json: { error: 'not_in_room' } });
    expect([await value(joins), await value(notIn), await value(durations)]).toEqual([before[0]! + 1, before[1]! + 1, before[2]! + 1]);
  });
});

type Kfcr = { id: number; user: string; content: string; timestamp: number; sys: boolean };

describe('KFCR, as its unchanged client uses it', () => {
  const getJson = async (path: string) => (await (await get(path)).json()) as Kfcr[];
  const post = (body: string) => fetch(`${base}/messages/post`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });

  it('returns user as posted (the ~ stays in textserver views) and a page of every message for last/-1', async () => {
    for (let i = 0; i < 3; i++) expect((await post(JSON.stringify({ user: 'jimbob', content: `m${i}` }))).status).toBe(201);
    const all = await getJson('/messages/last/-1');
    expect(all.map((m) => `${m.user}:${m.content}`)).toEqual(['jimbob:m2', 'jimbob:m1', 'jimbob:m0']);
    expect(await getJson('/messages/last/0')).toEqual([]);
    expect((await getJson('/messages/sinceid/-15')).map((m) => m.content)).toEqual(['m0', 'm1', 'm2']);
    expect((await getJson('/messages/since/-5')).map((m) => m.content)).toEqual(['m0', 'm1', 'm2']);
    expect(await getJson(`/messages/id/${all[0]!.id}`)).toMatchObject({ user: 'jimbob', content: 'm2' });
    // the room itself still tells a KFCR post from an account's
    const [u] = await freshUsers(srv.port, 'kview');
    const t = await tokenFor(u!);
    await api(base, 'POST', '/api/rooms/kfcr-std/join', undefined, t);
    const history = await api(base, 'GET', '/api/rooms/kfcr-std/messages?last=1', undefined, t);
    expect(history.json.messages[0].user).toBe('~jimbob');
  });

  it('parses numbers as Python int(): sign, surrounding spaces, underscores between digits', async () => {
    const status = async (path: string) => (await get(path)).status;
    expect((await getJson('/messages/last/+2')).length).toBe(2);
    expect((await getJson('/messages/last/%202%20')).length).toBe(2);
    expect((await getJson('/messages/last/0_2')).length).toBe(2);
    expect((await getJson('/messages/last/99999999999999999999999')).length).toBeGreaterThan(0);
    for (const bad of ['1__0', '_1', '1_', '2.0', '0x10', '-', '1%200']) expect(await status(`/messages/last/${bad}`), bad).toBe(400);
    expect(await status('/messages/id/-1')).toBe(404);
  });

  it('answers CORS on every route: preflights, errors and all', async () => {
    const cors = (res: Response) => res.headers.get('access-control-allow-origin');
    for (const path of ['/messages/last/5', '/messages/post', '/messages/sinceid/0', '/version', '/KFCR_verification']) {
      const pre = await fetch(base + path, {
        method: 'OPTIONS',
        headers: { origin: 'http://kfcr.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
      });
      expect(pre.status, path).toBeLessThan(300);
      expect(cors(pre), path).toBe('*');
      expect(pre.headers.get('access-control-allow-headers'), path).toMatch(/content-type/i);
    }
    for (const res of [
      await get('/messages/last/abc'),
      await get('/messages/id/99999999'),
      await post('{"user": "x"}'),
      await post('{not json'),
      await post('x'.repeat(MAX + 1)),
    ]) {
      expect(res.status).toBeGreaterThanOrEqual(400);
      expect(cors(res), `${res.status} ${res.url}`).toBe('*');
    }
    expect(cors(await get('/messages/last/1'))).toBe('*');
  });
});
