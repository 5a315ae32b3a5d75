/**
 * DELIVERY.md tried from outside, edge by edge, where the other delivery
 * tests do not look: each test here is a place where the server once
 * disagreed with the document (or with what a chat client can rely on where
 * the document is silent), kept so it does not come back.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import { removeDir, spawnServer, spawnServerRaw, startServer, tempDir, type TestServer } from '../helpers/server.ts';
import { RawConnection } from '../helpers/raw.ts';
import { api } from '../helpers/ws.ts';
import { errorOf, freshUsers, loggedIn, PW, serverFixture } from '../helpers/users.ts';
import { inboxConnection, range, waitEntries } from './helpers.ts';

const f = serverFixture(['--http-port', '0', '--user-rate', '0', '--user-bytes', '0']);
const base = () => `http://127.0.0.1:${f.srv.server.httpPort}`;
const token = async (user: string) => (await api(base(), 'POST', '/api/login', { user, password: PW })).json.token as string;

describe('HEAD /api/inbox', () => {
  // section 3: "Every entry written to any connection counts as received"; a HEAD writes no entry
  it('writes no entry, so it marks none received: a version 1 login still gets the stored message', async () => {
    const [to, from] = await f.users('hd', 'hdfrom');
    const d = await f.loggedIn(from!);
    expect(await d.ask('send', to!, 'kept')).toBe('ok');
    const t = await token(to!);
    const head = await fetch(`${base()}/api/inbox`, { method: 'HEAD', headers: { authorization: `Bearer ${t}` } });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
    const v1 = await f.open();
    v1.send('login', to!, PW);
    expect(await v1.nextN(2)).toEqual(['ok', `send,${from},kept`]);
  });
});

describe('where the document is silent (README "Delivery: the inbox")', () => {
  it('a second sync changes nothing; a second resume restarts the stream after its own <after>; a failed login keeps it', async () => {
    const [to, from] = await f.users('st', 'stfrom');
    const d = await f.loggedIn(from!);
    for (const n of ['1', '2', '3']) expect(await d.ask('send', to!, 'n', n)).toBe('ok');
    const a = await inboxConnection(f.srv.port, to!, '', '0', f.opened);
    expect(await a.c.nextN(3)).toEqual(['1', '2', '3'].map((n) => `inbox,${n},send,${from},n,${n}`));
    expect(await a.c.ask('sync')).toBe('ok');
    expect(await d.ask('send', to!, 'n', '4')).toBe('ok');
    expect(await a.c.next()).toBe(`inbox,4,send,${from},n,4`);
    expect(await a.c.ask('resume', a.epoch, '2')).toBe(`resumed,${a.epoch},4`);
    expect(await a.c.nextN(2)).toEqual([`inbox,3,send,${from},n,3`, `inbox,4,send,${from},n,4`]);
    expect(await a.c.ask('login', to!, 'not-the-password')).toMatch(errorOf('wrong_user_or_password'));
    expect(await d.ask('send', to!, 'n', '5')).toBe('ok');
    expect(await a.c.next()).toBe(`inbox,5,send,${from},n,5`);
    expect(await a.c.ask('nop')).toBe('');
  });
});

/** Servers of their own (flags, restarts), stopped after the file. */
const own: TestServer[] = [];
afterAll(async () => {
  for (const s of own) {
    await s.stop();
    removeDir(s.data);
  }
});
async function server(args: string[], data?: string): Promise<TestServer> {
  const s = await startServer(['--user-rate', '0', ...args], data);
  own.push(s);
  return s;
}

describe('retention of entries received late', () => {
  // section 1: "an entry is kept while it is among the user's last --inbox-retain entries"; section 5: "Retention
  // drops entries within a few seconds of leaving the window". An entry kept past the window only because nobody had
  // received it must go once it is received, like any other.
  it('drops entries past --inbox-retain once a version 1 login received them', async () => {
    const s = await server(['--inbox-retain', '2']);
    const [to, from] = await freshUsers(s.port, 'lrto', 'lrfrom');
    const d = await loggedIn(s.port, from!, f.opened);
    for (let i = 1; i <= 5; i++) expect(await d.ask('send', to!, 'n', String(i))).toBe('ok');
    // an inbox connection from latest takes seq 6 live and leaves 1..5 for a version 1 login
    const a = await inboxConnection(s.port, to!, '', 'latest', f.opened);
    expect(a.head).toBe(5);
    expect(await d.ask('send', to!, 'n', '6')).toBe('ok');
    expect(await a.c.next()).toBe(`inbox,6,send,${from},n,6`);
    await s.server.core.hub.inbox.sweep();
    const v1 = await loggedIn(s.port, to!, f.opened);
    expect(await v1.nextN(5)).toEqual(range(1, 5).map((n) => `send,${from},n,${n}`));
    // received now, and outside the newest two: 1..4 go within a sweep or two
    await eventually(
      async () => {
        await s.server.core.hub.inbox.sweep();
        const c = await inboxConnection(s.port, to!, a.epoch, 'latest', f.opened);
        expect(await c.c.ask('resume', a.epoch, '3')).toMatch(errorOf('stream_reset'));
      },
      8000,
      200,
    );
    const b = await inboxConnection(s.port, to!, a.epoch, '4', f.opened);
    expect(await b.c.nextN(2)).toEqual([`inbox,5,send,${from},n,5`, `inbox,6,send,${from},n,6`]);
  });

  it('drops entries past a --inbox-retain lowered at a restart, without waiting for a new entry', async () => {
    const data = tempDir();
    const first = await startServer(['--user-rate', '0'], data);
    const [to, from] = await freshUsers(first.port, 'rrto', 'rrfrom');
    const d = await loggedIn(first.port, from!, f.opened);
    for (let i = 1; i <= 6; i++) expect(await d.ask('send', to!, 'n', String(i))).toBe('ok');
    const a = await inboxConnection(first.port, to!, '', '0', f.opened);
    await waitEntries(a.c, 6);
    await first.stop();
    const second = await server(['--inbox-retain', '2'], data);
    await eventually(
      async () => {
        await second.server.core.hub.inbox.sweep();
        const c = await inboxConnection(second.port, to!, a.epoch, 'latest', f.opened);
        expect(await c.c.ask('resume', a.epoch, '3')).toMatch(errorOf('stream_reset'));
      },
      8000,
      200,
    );
    const b = await inboxConnection(second.port, to!, a.epoch, '4', f.opened);
    expect(await b.c.nextN(2)).toEqual([`inbox,5,send,${from},n,5`, `inbox,6,send,${from},n,6`]);
  });
});

describe('--once-ttl out of range', () => {
  // README "Running the server": "A bad value stops the server with a one-line message on stderr and exit code 2";
  // a module's flag (here the once module's) is a flag like the others
  it('stops the server with exit code 2 and one line naming the flag', async () => {
    const data = tempDir();
    try {
      const s = spawnServerRaw(['--port', '0', '--data', data, '--once-ttl', '0']);
      expect(await s.exited).toBe(2);
      expect(s.lines.filter((l) => l.includes('--once-ttl'))).toHaveLength(1);
    } finally {
      removeDir(data);
    }
  });
});

describe('--inbox-max-age at its upper end', () => {
  // section 1: "younger than --inbox-max-age days"; the flag takes any positive number of days. An age that reaches
  // before 1970 drops nothing by age: it must not make every sweep fail (PostgreSQL refuses such a bigint)
  it('1e300 days: the sweeps still run, and the window by count still holds', async () => {
    const data = tempDir();
    const s = await spawnServer(['--data', data, '--inbox-max-age', '1e300', '--inbox-retain', '1', '--user-rate', '0']);
    try {
      const [to, from] = await freshUsers(s.port, 'mato', 'mafrom');
      const a = await inboxConnection(s.port, to!, '', '0', f.opened);
      const d = await loggedIn(s.port, from!, f.opened);
      // two sweeps seen to trim: the first one has ended by the time the second one trims
      for (const n of [1, 2, 3, 4]) {
        expect(await d.ask('send', to!, 'n', String(n))).toBe('ok');
        await waitEntries(a.c, n);
        if (n % 2 === 1) continue;
        await eventually(
          async () => {
            const c = await inboxConnection(s.port, to!, a.epoch, 'latest', f.opened);
            expect(await c.c.ask('resume', a.epoch, String(n - 2))).toMatch(errorOf('stream_reset'));
          },
          10_000,
          200,
        );
      }
      expect(s.lines.filter((l) => l.includes('sweep failed'))).toEqual([]);
    } finally {
      s.proc.kill('SIGTERM');
      await s.exited;
      removeDir(data);
    }
  });
});

/**
 * An inbox connection of `me` that has asked for a long replay and does not
 * read (a phone on a slow link): the first N entries of its inbox are 50 kB
 * each from `filler`, and the replay waits for the socket.
 */
async function pausedBehindReplay(port: number, me: string, filler: string, N: number): Promise<RawConnection> {
  const d = await loggedIn(port, filler, f.opened);
  for (let i = 0; i < N; i++) d.send('send', me, 'n', String(i), 'x'.repeat(50_000));
  expect(new Set(await d.nextN(N, 30_000))).toEqual(new Set(['ok']));
  const c = await RawConnection.open(port);
  f.opened.push(c);
  expect(await c.ask('sync')).toBe('ok');
  expect(await c.ask('login', me, PW)).toBe('ok');
  c.socket.pause();
  c.send('resume', '', '0');
  return c;
}

/** Once the request ran (its witness seen elsewhere) and --request-timeout has run out, the client reads again: its frames after resumed. */
async function readAfterTimeout(c: RawConnection, count: number): Promise<string[]> {
  // the one fixed wait here is the timeout under test (--request-timeout 1): the reply must still be held once it ran out
  await new Promise((resolve) => setTimeout(resolve, 2500));
  c.socket.resume();
  const frames = (await c.waitFrames(2 + count, 30_000)).slice(2);
  expect(frames[0]).toMatch(/^resumed,/);
  return frames.slice(1);
}

const SLOW = ['--request-timeout', '1', '--max-outbound', '1048576', '--user-bytes', '0', '--mailbox-size', '10000'];

describe('the carbon before the reply, behind a replay the client reads slowly', () => {
  // section 3: every inbox entry arrives on an inbox connection "including the carbon of a send made on this same
  // connection (pushed before that send's reply, like every push a request causes)": however long the client takes
  // to read the replay in front of it, not only for --request-timeout
  it('holds the reply while the client does not read, past --request-timeout', async () => {
    const s = await server(SLOW);
    const [me, other] = await freshUsers(s.port, 'slme', 'slother');
    const N = 300;
    const c = await pausedBehindReplay(s.port, me!, other!, N);
    const witness = await inboxConnection(s.port, other!, '', 'latest', f.opened);
    c.send('send', other!, 'mine');
    // the send ran: its entry reached the other side
    expect(await witness.c.next(10_000)).toBe(`inbox,${N + 1},send,${me},mine`);
    const after = await readAfterTimeout(c, 1 + N + 2);
    expect(after.slice(0, N).map((e) => e.split(',')[1])).toEqual(range(1, N).map(String));
    expect(after.slice(N)).toEqual([`inbox,${N + 1},sent,${other},mine`, 'ok']);
  }, 60_000);
});

describe("a friend push to the requester's own inbox connection, behind a replay the client reads slowly", () => {
  // section 3: "like every push a request causes": friend_accept's own `friend,added` entry comes before its ok
  it('holds the reply until the entry is written', async () => {
    const s = await server(SLOW);
    const [me, other] = await freshUsers(s.port, 'sfme', 'sfother');
    const N = 300;
    const o = await loggedIn(s.port, other!, f.opened);
    expect(await o.ask('friend_request', me!)).toBe('ok');
    const c = await pausedBehindReplay(s.port, me!, other!, N);
    const witness = await inboxConnection(s.port, other!, '', 'latest', f.opened);
    c.send('friend_accept', other!);
    expect(await witness.c.next(10_000)).toMatch(new RegExp(`^inbox,\\d+,friend,added,${me}$`));
    const after = await readAfterTimeout(c, 1 + N + 1 + 2);
    expect(after.slice(0, N + 1).map((e) => e.split(',')[1])).toEqual(range(1, N + 1).map(String));
    expect(after.slice(N + 1)).toEqual([`inbox,${N + 2},friend,added,${other}`, 'ok']);
  }, 60_000);
});
