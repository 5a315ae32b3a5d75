/**
 * GATEWAYS.md section 3: "KFCR clients work unchanged". The reference KFCR
 * web client, step by step over real HTTP: verify, read `last/50`, take the
 * largest id of that page as its position (`Math.max(...ids)`), then poll
 * `sinceid/<position>` every second and `response.json()` the answer. The
 * reference server's database always holds its boot message, so that page
 * is never empty there; here a new room leaves the client at `Math.max()`
 * of nothing, `-Infinity`, and it must still see the first post.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, startServer, type TestServer } from '../helpers/server.ts';

type Kfcr = { id: number; user: string; content: string; timestamp: number; sys: boolean };

let srv: TestServer;
let base: string;

beforeAll(async () => {
  srv = await startServer(['--http-port', '0', '--kfcr-room', 'kfcr-empty']);
  base = `http://127.0.0.1:${srv.server.httpPort}`;
});

afterAll(async () => {
  await srv.stop();
  removeDir(srv.data);
});

/** What the reference client does with a reply: `response.json()`, failing on anything else. */
async function json(path: string): Promise<Kfcr[]> {
  const r = await fetch(base + path);
  const text = await r.text();
  expect(() => JSON.parse(text), `${path} answered ${r.status} ${text}`).not.toThrow();
  return JSON.parse(text) as Kfcr[];
}

describe('the reference KFCR client against a room with no messages yet', () => {
  it('takes -Infinity as its position from an empty last/50, polls from it, and sees the first post', async () => {
    expect((await fetch(`${base}/KFCR_verification`)).status).toBe(200);
    const first = await json('/messages/last/50');
    expect(first).toEqual([]);
    let position = Math.max(...first.map((m) => Number(m.id)));
    expect(position).toBe(-Infinity);
    expect(await json(`/messages/sinceid/${position}`)).toEqual([]);

    const post = await fetch(`${base}/messages/post`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: 'kfuser', content: 'the first post' }),
    });
    expect(post.status).toBe(201);
    const polled = await json(`/messages/sinceid/${position}`);
    expect(polled.map((m) => [m.user, m.content, m.sys])).toEqual([['kfuser', 'the first post', false]]);
    position = Math.max(position, ...polled.map((m) => m.id));
    expect(position).toBeGreaterThan(0);
    expect(await json(`/messages/sinceid/${position}`)).toEqual([]);
    // only that spelling: what Python's int() refuses otherwise is still KFCR's 400
    for (const bad of ['Infinity', '-inf', 'NaN']) expect((await fetch(`${base}/messages/sinceid/${bad}`)).status).toBe(400);
  });
});
