/**
 * Hostile clients against the inbox (DELIVERY.md): what one of them may
 * cost the server stays within the configured bounds. Each test fails
 * without its guard.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { RawConnection } from '../helpers/raw.ts';
import { removeDir, startServer, type TestServer } from '../helpers/server.ts';
import { freshUsers, loggedIn, PW } from '../helpers/users.ts';
import { entries, inboxConnection, range, seqOf, waitEntries } from '../delivery/helpers.ts';
import { InboxData, type InboxRow } from '../../src/store/inbox-data.ts';

const servers: TestServer[] = [];
const opened: RawConnection[] = [];

afterEach(async () => {
  vi.restoreAllMocks();
  for (const c of opened.splice(0)) c.close();
  for (const s of servers.splice(0)) {
    await s.stop();
    removeDir(s.data);
  }
});

async function server(args: string[]): Promise<TestServer> {
  const s = await startServer(args);
  servers.push(s);
  return s;
}

/** The server's HTTP base URL and a bearer token of `user`. */
async function httpLogin(s: TestServer, user: string): Promise<{ base: string; token: string }> {
  const base = `http://127.0.0.1:${s.server.httpPort}`;
  const login = await fetch(`${base}/api/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user, password: PW }),
  });
  const { token } = (await login.json()) as { token: string };
  return { base, token };
}

/** Payload bytes of the entries each store read of `method` returned, recorded as the server reads. */
function pagesOf(method: 'after' | 'pendingAfter'): number[] {
  const pages: number[] = [];
  const original = InboxData.prototype[method] as (...args: unknown[]) => Promise<InboxRow[] | { rows: InboxRow[] }>;
  vi.spyOn(InboxData.prototype, method).mockImplementation(async function (this: InboxData, ...args: unknown[]) {
    const page = await original.apply(this, args);
    const rows = Array.isArray(page) ? page : page.rows;
    pages.push(rows.reduce((n, r) => n + Buffer.byteLength(r.payload), 0));
    return page as never;
  });
  return pages;
}

/** Sends `texts` from `c`'s user to `to`, each answered `ok` (pushes to `c` itself skipped). */
async function sendAll(c: RawConnection, to: string, texts: string[]): Promise<void> {
  for (const text of texts) {
    c.send('send', to, 'm', text);
    let reply = await c.next();
    while (reply.startsWith('send,')) reply = await c.next();
    expect(reply).toBe('ok');
  }
}

const bigTexts = (n: number, filler: string) => Array.from({ length: n }, (_, i) => `${i}${filler}`);

// --max-outbound 256 KiB: a replay or drain leaves at most 128 KiB unread, and a page read from the store holds as much
const OUTBOUND = 256 * 1024;
const PAGE = OUTBOUND / 2;
const BIG = 'x'.repeat(60_000);

describe('inbox pages are bounded in bytes, not only in entries', () => {
  it('a replay to a client that does not read reads the store a bounded page at a time, and the client then gets every entry once', async () => {
    const s = await server(['--max-outbound', String(OUTBOUND), '--user-bytes', '0']);
    const [u] = await freshUsers(s.port, 'bigreplay');
    const filler = await loggedIn(s.port, u!, opened);
    // 40 sends to oneself: 80 entries of 60 KB (4.8 MB), all of which a page of 256 entries would read at once
    await sendAll(filler, u!, bigTexts(40, BIG));
    filler.close();

    const pages = pagesOf('after');
    const c = await RawConnection.open(s.port);
    opened.push(c);
    expect(await c.ask('sync')).toBe('ok');
    expect(await c.ask('login', u!, PW)).toBe('ok');
    c.socket.pause();
    c.send('resume', '', '0');
    // the replay reads on while its window of unread bytes has room, then waits for the client
    await vi.waitFor(() => expect(pages.length).toBeGreaterThan(1), { timeout: 10_000 });
    c.socket.resume();
    const got = await waitEntries(c, 80, 20_000);
    expect(got.map(seqOf)).toEqual(range(1, 80));
    expect(c.frames[2]).toMatch(/^resumed,/);
    expect(pages.length).toBeGreaterThan(1);
    for (const bytes of pages) expect(bytes).toBeLessThanOrEqual(PAGE + 70_000);
  });

  it('a version 1 login drains big stored messages a bounded page at a time, every one of them once', async () => {
    const s = await server(['--max-outbound', String(OUTBOUND), '--user-bytes', '0']);
    const [to, from] = await freshUsers(s.port, 'bigdrain', 'bigsender');
    const sender = await loggedIn(s.port, from!, opened);
    await sendAll(sender, to!, bigTexts(30, BIG));

    const pages = pagesOf('pendingAfter');
    const c = await loggedIn(s.port, to!, opened);
    await c.waitFrames(1 + 30, 20_000);
    expect(c.frames.slice(1).map((f) => Number.parseInt(f.split(',')[3]!, 10))).toEqual(range(0, 29));
    expect(pages.filter((b) => b > 0).length).toBeGreaterThan(1);
    for (const bytes of pages) expect(bytes).toBeLessThanOrEqual(PAGE + 70_000);
  });

  it('GET /api/inbox answers a page of at most about half of --max-outbound (one entry at least), and paging by after gets them all', async () => {
    const s = await server(['--max-outbound', String(OUTBOUND), '--user-bytes', '0', '--http-port', '0']);
    const [u] = await freshUsers(s.port, 'bighttp');
    const filler = await loggedIn(s.port, u!, opened);
    await sendAll(filler, u!, bigTexts(20, BIG));
    const { base, token } = await httpLogin(s, u!);
    const seqs: number[] = [];
    for (let after = 0, pages = 0; after < 40; pages++) {
      expect(pages).toBeLessThan(40);
      const res = await fetch(`${base}/api/inbox?after=${after}&limit=1000`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { head: number; entries: { seq: number; fields: string[] }[] };
      expect(body.head).toBe(40);
      expect(body.entries.length).toBeGreaterThan(0);
      expect(body.entries.reduce((n, e) => n + e.fields.join(',').length, 0)).toBeLessThanOrEqual(PAGE + 70_000);
      seqs.push(...body.entries.map((e) => e.seq));
      after = body.entries.at(-1)!.seq;
    }
    expect(seqs).toEqual(range(1, 40));
  });

  it('an entry bigger than a page still comes, alone', async () => {
    const s = await server(['--max-outbound', String(64 * 1024), '--user-bytes', '0']);
    const [u] = await freshUsers(s.port, 'hugeentry');
    const filler = await loggedIn(s.port, u!, opened);
    await sendAll(filler, u!, bigTexts(3, 'y'.repeat(40_000)));
    const { c } = await inboxConnection(s.port, u!, '', '0', opened);
    expect((await waitEntries(c, 6)).map(seqOf)).toEqual(range(1, 6));
    expect(entries(c)[0]).toMatch(/^inbox,1,send,/);
  });
});

describe('once', () => {
  it('runs login and register as DELIVERY.md says, without holding the store while a password is checked', async () => {
    // a slow hash (about a tenth of a second here): another user's send must not wait for it
    const s = await server(['--argon2-memory-kib', '8192', '--argon2-time', '16']);
    const [u, other, to] = await freshUsers(s.port, 'oncelogin', 'onceother', 'onceto');
    const c = await loggedIn(s.port, u!, opened);
    const d = await loggedIn(s.port, other!, opened);
    // recorded like any command: the repeat runs nothing, even with the right password this time
    expect(await c.ask('once', 'k1', 'login', u!, 'wrong-password')).toMatch(/^error,nonfatal,wrong_user_or_password/);
    expect(await c.ask('once', 'k1', 'login', u!, PW)).toMatch(/^error,nonfatal,wrong_user_or_password/);
    // while a once login checks its password, another user's send is stored and answered (on SQLite the
    // login used to hold the store's one connection until its key committed, and the send waited)
    const order: string[] = [];
    c.send('once', 'k2', 'login', u!, PW);
    d.send('send', to!, 'hello');
    await Promise.all([c.next().then((r) => order.push(`login ${r}`)), d.next().then((r) => order.push(`send ${r}`))]);
    expect(order).toEqual(['send ok', 'login ok']);
    expect(await c.ask('once', 'k2', 'login', u!, 'wrong-password')).toBe('ok');
    // register: the account is made once, and the repeat gets the recorded ok, not name_taken
    expect(await c.ask('once', 'k3', 'register', `${u}x`, PW)).toBe('ok');
    expect(await c.ask('once', 'k3', 'register', `${u}x`, PW)).toBe('ok');
    expect(await c.ask('register', `${u}x`, PW)).toMatch(/^error,nonfatal,name_taken/);
    expect(await c.ask('whoami')).toBe(`user,${u}`);
  });

  it('pays a recorded reply from the user byte budget: tiny once requests cannot store big replies at the speed of the disk', async () => {
    const s = await server(['--user-bytes', '20000', '--user-bytes-burst', '200000']);
    const [u] = await freshUsers(s.port, 'oncebig');
    const c = await loggedIn(s.port, u!, opened);
    c.send('join', 'oncebig');
    c.send('say', 'oncebig', 'h'.repeat(50_000));
    // the join's push and ok, the say's push and reply
    expect((await c.nextN(4)).at(-1)).toMatch(/^said,oncebig,/);
    const replies: string[] = [];
    for (let i = 0; i < 20 && !replies.some((r) => r.includes('rate_limited')); i++)
      replies.push(await c.ask('once', `h${i}`, 'history', 'oncebig', 'last', '1'));
    expect(replies.at(-1)).toMatch(/^error,nonfatal,rate_limited,/);
    // 200 KB of burst, 50 KB of them for the say: about three 50 KB replies recorded, not twenty
    expect(replies.length).toBeLessThanOrEqual(6);
    expect(replies[0]).toMatch(/^history,oncebig,1,/);
  });
});

describe('GET /api/inbox', () => {
  it('pays the user request budget like every other route', async () => {
    const s = await server(['--http-port', '0', '--user-rate', '5', '--user-rate-burst', '5']);
    const [u] = await freshUsers(s.port, 'inboxrate');
    const { base, token } = await httpLogin(s, u!);
    const statuses: number[] = [];
    let refused: unknown;
    for (let i = 0; i < 10; i++) {
      const res = await fetch(`${base}/api/inbox?after=0`, { headers: { authorization: `Bearer ${token}` } });
      statuses.push(res.status);
      const body = await res.json();
      if (res.status === 429) refused = body;
    }
    expect(statuses.filter((code) => code === 200).length).toBeLessThanOrEqual(6);
    expect(statuses.at(-1)).toBe(429);
    expect(refused).toMatchObject({ error: 'rate_limited' });
  });
});
