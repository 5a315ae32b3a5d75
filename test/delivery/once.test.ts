/**
 * DELIVERY.md section 3, `once`: a key's first use runs the command and
 * records its reply with its writes; repeats (concurrent ones too, over any
 * connection or HTTP with Idempotency-Key) get that reply and change nothing.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { RawConnection } from '../helpers/raw.ts';
import { removeDir, startServer, tempDir, type TestServer } from '../helpers/server.ts';
import { errorOf, expectNoMoreFrames, freshUsers, loggedIn, PW } from '../helpers/users.ts';
import { eventually } from '../helpers/eventually.ts';
import { api } from '../helpers/ws.ts';
import { inboxConnection } from './helpers.ts';

const opened: RawConnection[] = [];
const servers: TestServer[] = [];

afterAll(async () => {
  for (const c of opened) c.close();
  for (const s of servers) {
    await s.stop();
    removeDir(s.data);
  }
});

async function server(args: string[] = [], data?: string): Promise<TestServer> {
  const s = await startServer(['--user-rate', '0', '--http-port', '0', ...args], data);
  servers.push(s);
  return s;
}

/** The head of the user's inbox, as a new inbox connection's resume reports it. */
async function head(s: TestServer, user: string): Promise<number> {
  const r = await inboxConnection(s.port, user, '', 'latest', opened);
  r.c.close();
  return r.head;
}

describe('once', () => {
  it('runs a key once: a repeat gets the recorded reply, even for another command, and runs nothing', async () => {
    const s = await server();
    const [me, bob, cid] = await freshUsers(s.port, 'ome', 'obob', 'ocid');
    const c = await loggedIn(s.port, me!, opened);
    expect(await c.ask('once', 'k1', 'send', bob!, 'msg', 'hi')).toBe('ok');
    expect(await c.ask('once', 'k1', 'send', bob!, 'msg', 'hi')).toBe('ok');
    expect(await c.ask('once', 'k1', 'whoami')).toBe('ok'); // the recorded reply, not whoami's
    expect(await head(s, bob!)).toBe(1);
    expect(await c.ask('once', 'k2', 'whoami')).toBe(`user,${me}`);
    expect(await c.ask('req', '7', 'once', 'k2', 'nop')).toBe(`req,7,user,${me}`);
    // keys are per user
    const other = await loggedIn(s.port, cid!, opened);
    expect(await other.ask('once', 'k2', 'whoami')).toBe(`user,${cid}`);
  });

  it('records an error reply, but not syntax: a corrected retry with the same key runs', async () => {
    const s = await server();
    const [me] = await freshUsers(s.port, 'oerr');
    const c = await loggedIn(s.port, me!, opened);
    const ghost = `ghost${Date.now() % 100000}`;
    expect(await c.ask('once', 'e1', 'send', ghost, 'x')).toMatch(errorOf('user_not_found'));
    expect(await c.ask('register', ghost, PW)).toBe('ok');
    expect(await c.ask('once', 'e1', 'send', ghost, 'x')).toMatch(errorOf('user_not_found')); // recorded
    expect(await c.ask('req', 'r', 'once', 'e1', 'send', ghost, 'x')).toMatch(/^req,r,error,nonfatal,user_not_found,/);
    expect(await c.ask('once', 'e2', 'send', ghost)).toMatch(errorOf('syntax')); // send's own syntax
    expect(await c.ask('once', 'e2', 'send', ghost, 'x')).toBe('ok');
    expect(await head(s, ghost)).toBe(1);
  });

  it('checks its own arguments and the login, and records nothing then', async () => {
    const s = await server();
    const [me] = await freshUsers(s.port, 'oarg');
    const c = await RawConnection.open(s.port);
    opened.push(c);
    expect(await c.ask('once', 'k', 'nop')).toMatch(errorOf('not_logged_in'));
    expect(await c.ask('login', me!, PW)).toBe('ok');
    for (const bad of [
      ['once'],
      ['once', 'k'],
      ['once', '', 'nop'],
      ['once', 'k', ''],
      ['once', 'k', 'req', '1', 'nop'],
      ['once', 'k', 'once', 'j', 'nop'],
      ['once', 'x'.repeat(65), 'nop'],
    ]) {
      expect(await c.ask(...bad)).toMatch(errorOf('syntax'));
    }
    expect(await c.ask('req', '1', 'once', 'k', 'req', '2', 'nop')).toMatch(/^req,1,error,nonfatal,syntax,/);
    expect(await c.ask('once', 'k', 'whoami')).toBe(`user,${me}`); // k was not taken by the refusals
    expect(await c.ask('once', '🔑'.repeat(64), 'nop')).toBe(''); // 64 characters, whatever their bytes
  });

  it('a repeat that arrives while the first runs waits for it: one delivery for many concurrent tries', async () => {
    const s = await server();
    const [me, bob] = await freshUsers(s.port, 'oconc', 'oconcb');
    const conns = await Promise.all(Array.from({ length: 6 }, () => loggedIn(s.port, me!, opened)));
    const replies = await Promise.all(conns.map((c, i) => c.ask('req', String(i), 'once', 'same', 'send', bob!, 'n', String(i))));
    expect(replies).toEqual(conns.map((_, i) => `req,${i},ok`));
    const b = await inboxConnection(s.port, bob!, '', '0', opened);
    expect(b.head).toBe(1);
    expect(await b.c.next()).toMatch(/^inbox,1,send,/);
    await expectNoMoreFrames(b.c);
  });

  it('on an inbox connection the carbon still comes before the reply; a repeat pushes nothing', async () => {
    const s = await server();
    const [me, bob] = await freshUsers(s.port, 'ocarb', 'ocarbb');
    const a = await inboxConnection(s.port, me!, '', '0', opened);
    a.c.send('once', 'c1', 'send', bob!, 'm', 'x');
    expect(await a.c.nextN(2)).toEqual([`inbox,1,sent,${bob},m,x`, 'ok']);
    expect(await a.c.ask('once', 'c1', 'send', bob!, 'm', 'x')).toBe('ok');
    await expectNoMoreFrames(a.c);
  });

  it('room commands under once: a repeated join or say runs once, pushes once, and a say stays in its room batch', async () => {
    const s = await server();
    const [me, other] = await freshUsers(s.port, 'oroom', 'owatch');
    const room = `once_${Date.now() % 100000}`;
    const watcher = await loggedIn(s.port, other!, opened);
    expect(await watcher.ask('join', room)).toBe(`room,${room},joined,${other}`);
    expect(await watcher.next()).toBe('ok');
    const c = await loggedIn(s.port, me!, opened);
    expect(await c.ask('once', 'j1', 'join', room)).toBe(`room,${room},joined,${me}`);
    expect(await c.next()).toBe('ok');
    expect(await watcher.next()).toBe(`room,${room},joined,${me}`);
    expect(await c.ask('once', 'j1', 'join', room)).toBe('ok');
    // other users' says share the room's batches while the once-wrapped one runs
    watcher.send('say', room, 'beside');
    const reply = async (prefix: string) => {
      for (;;) {
        const frame = await c.next();
        if (frame.startsWith(prefix)) return frame;
      }
    };
    c.send('once', 's1', 'say', room, 'only once');
    const said = await reply('said,');
    expect(said).toMatch(new RegExp(`^said,${room},\\d+,\\d+$`));
    c.send('once', 's1', 'say', room, 'only once');
    expect(await reply('said,')).toBe(said);
    // the watcher's say acknowledged (its said among these) before the history is read: it is committed
    const frames = await watcher.nextN(3);
    expect(frames.filter((f) => f.endsWith(',only once'))).toHaveLength(1);
    expect(frames.filter((f) => f.startsWith(`said,${room},`))).toHaveLength(1);
    c.send('history', room, 'last', '10');
    const history = await reply('history,');
    expect(history.split(',').filter((f) => f === 'only once')).toHaveLength(1);
    expect(history).toContain('beside');
    await expectNoMoreFrames(watcher);
  });

  it('a key is forgotten --once-ttl seconds after its first use', async () => {
    const s = await server(['--once-ttl', '1']);
    const [me, bob] = await freshUsers(s.port, 'ottl', 'ottlb');
    const c = await loggedIn(s.port, me!, opened);
    expect(await c.ask('once', 't', 'send', bob!, 'x')).toBe('ok');
    expect(await head(s, bob!)).toBe(1);
    await eventually(
      async () => {
        expect(await c.ask('once', 't', 'send', bob!, 'x')).toBe('ok');
        expect(await head(s, bob!)).toBe(2);
      },
      10_000,
      200,
    );
  });

  it('a user keeps at most --once-max-keys keys: the oldest are forgotten before their TTL, the newest still answer', async () => {
    const s = await server(['--once-max-keys', '5']);
    const [me, bob] = await freshUsers(s.port, 'omax', 'omaxb');
    const c = await loggedIn(s.port, me!, opened);
    for (let i = 0; i < 20; i++) expect(await c.ask('once', `m${i}`, 'send', bob!, 'x')).toBe('ok');
    expect(await head(s, bob!)).toBe(20);
    // the first key, forgotten: a repeat runs again (without the bound it is remembered for a day)
    await eventually(
      async () => {
        expect(await c.ask('once', 'm0', 'send', bob!, 'x')).toBe('ok');
        expect(await head(s, bob!)).toBe(21);
      },
      10_000,
      100,
    );
    // the newest are still remembered: repeats run nothing
    for (let i = 17; i < 20; i++) expect(await c.ask('once', `m${i}`, 'send', bob!, 'x')).toBe('ok');
    expect(await head(s, bob!)).toBe(21);
  });

  it('survives a restart: the key was committed with the command', async () => {
    const data = tempDir();
    const first = await startServer(['--user-rate', '0'], data);
    const [me, bob] = await freshUsers(first.port, 'orst', 'orstb');
    const c = await loggedIn(first.port, me!, opened);
    expect(await c.ask('once', 'r1', 'send', bob!, 'x')).toBe('ok');
    await first.stop();
    const second = await server([], data);
    const d = await loggedIn(second.port, me!, opened);
    expect(await d.ask('once', 'r1', 'send', bob!, 'x')).toBe('ok');
    expect(await head(second, bob!)).toBe(1);
  });

  it('HTTP: an Idempotency-Key makes a POST route run once and answer the same', async () => {
    const s = await server();
    const base = `http://127.0.0.1:${s.server.httpPort}`;
    const [me, bob] = await freshUsers(s.port, 'ohttp', 'ohttpb');
    const token = (await api(base, 'POST', '/api/login', { user: me, password: PW })).json.token as string;
    const post = (path: string, body: unknown, key?: string) =>
      fetch(base + path, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, ...(key === undefined ? {} : { 'idempotency-key': key }) },
        body: JSON.stringify(body),
      }).then(async (r) => ({ status: r.status, text: await r.text() }));
    for (let i = 0; i < 3; i++) expect((await post(`/api/send/${bob}`, { command: 'msg', args: ['hi'] }, 'h1')).status).toBe(204);
    expect(await head(s, bob!)).toBe(1);
    expect((await post(`/api/send/${bob}`, { command: 'msg', args: ['hi'] })).status).toBe(204); // no key: runs
    expect(await head(s, bob!)).toBe(2);
    expect((await post('/api/rooms/oroom/join', {}, 'j1')).status).toBe(204);
    const said = await post('/api/rooms/oroom/messages', { text: 'once' }, 'm1');
    expect(said.status).toBe(201);
    expect(await post('/api/rooms/oroom/messages', { text: 'once' }, 'm1')).toEqual(said);
    const history = await api(base, 'GET', '/api/rooms/oroom/messages', undefined, token);
    expect(history.json.messages.map((m: { text: string }) => m.text)).toEqual(['once']);
    expect((await post(`/api/send/${bob}`, { command: 'msg' }, 'x'.repeat(65))).status).toBe(400);
  });
});
