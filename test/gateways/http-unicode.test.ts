/**
 * GATEWAYS.md section 2: errors are the protocol's, and PROTOCOL.md makes
 * text that is not valid UTF-8 a `syntax` error. JSON can carry such text
 * as a lone surrogate escape (`"\ud800"`, valid JSON grammar, no Unicode
 * character): it must be refused with 400 rather than stored as U+FFFD
 * and acknowledged, which would change the text (and make two different
 * passwords the same one).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, startServer, type TestServer } from '../helpers/server.ts';
import { api } from '../helpers/ws.ts';
import { freshUsers, PW } from '../helpers/users.ts';

let srv: TestServer;
let base: string;

beforeAll(async () => {
  srv = await startServer(['--http-port', '0']);
  base = `http://127.0.0.1:${srv.server.httpPort}`;
});

afterAll(async () => {
  await srv.stop();
  removeDir(srv.data);
});

const LONE = '\\ud800'; // the six characters of the escape, as a client's JSON text carries them

describe('JSON strings that are not Unicode text', () => {
  it('refuses a lone surrogate in a posted message, a send and a register with 400 syntax, storing nothing', async () => {
    const [u, peer] = await freshUsers(srv.port, 'uni', 'unipeer');
    const t = (await api(base, 'POST', '/api/login', { user: u, password: PW })).json.token as string;
    expect((await api(base, 'POST', '/api/rooms/unicode/join', undefined, t)).status).toBe(204);

    const said = await api(base, 'POST', '/api/rooms/unicode/messages', `{"text":"a${LONE}b"}`, t);
    expect(said).toMatchObject({ status: 400, json: { error: 'syntax' } });
    const history = await api(base, 'GET', '/api/rooms/unicode/messages?last=5', undefined, t);
    expect(history.json.messages.map((m: { text: string }) => m.text)).toEqual([]);

    const sent = await api(base, 'POST', `/api/send/${peer}`, `{"command":"msg","args":["${LONE}"]}`, t);
    expect(sent).toMatchObject({ status: 400, json: { error: 'syntax' } });

    const registered = await api(base, 'POST', '/api/register', `{"user":"surrogate","password":"${LONE.repeat(8)}"}`);
    expect(registered).toMatchObject({ status: 400, json: { error: 'syntax' } });

    // a pair that makes one character is text, escaped or not
    const pair = await api(base, 'POST', '/api/rooms/unicode/messages', '{"text":"\\ud83d\\ude00 😀"}', t);
    expect(pair.status).toBe(201);
    const after = await api(base, 'GET', '/api/rooms/unicode/messages?last=5', undefined, t);
    expect(after.json.messages.map((m: { text: string }) => m.text)).toEqual(['😀 😀']);
  });

  it('refuses a lone surrogate in a KFCR post too (400, nothing stored)', async () => {
    const post = await fetch(`${base}/messages/post`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: `{"user":"k","content":"${LONE}"}` });
    expect(post.status).toBe(400);
    const last = (await (await fetch(`${base}/messages/last/5`)).json()) as { content: string }[];
    expect(last.map((m) => m.content)).not.toContain('\ufffd');
  });
});
