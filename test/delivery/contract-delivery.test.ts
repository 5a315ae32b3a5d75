/**
 * DELIVERY.md read line by line as an outside tester would: the statements
 * inbox.test.ts, once.test.ts and retention.test.ts leave out (resume's
 * argument edges, a synced connection before its resume, what modules deliver
 * as inbox entries and past a full mailbox, what stays out of the inbox,
 * carbons and the sender's own mailbox, `once` and `unavailable`, the limits
 * of GET /api/inbox).
 */
import { describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import { api } from '../helpers/ws.ts';
import { errorOf, expectNoMoreFrames, PW, serverFixture } from '../helpers/users.ts';
import { entries, inboxConnection, waitEntries } from './helpers.ts';

const f = serverFixture(['--mailbox-size', '2', '--http-port', '0', '--user-rate', '0', '--user-bytes', '0']);
const inbox = (user: string, epoch = '', after = '0') => inboxConnection(f.srv.port, user, epoch, after, f.opened);
const base = () => `http://127.0.0.1:${f.srv.server.httpPort}`;
const token = async (user: string) => (await api(base(), 'POST', '/api/login', { user, password: PW })).json.token as string;

describe('resume: its arguments', () => {
  it('after: digits only; latest in lower case; a number too big for any seq is past the head (stream_reset), not syntax', async () => {
    const [u, from] = await f.users('ra', 'rafrom');
    const d = await f.loggedIn(from!);
    expect(await d.ask('send', u!, 'one')).toBe('ok');
    const c = await f.loggedIn(u!);
    await c.next(); // the drained send
    for (const bad of [['', '+1'], ['', ' 1'], ['', '1 '], ['', 'LATEST'], ['', '0x1'], ['', '1e3'], ['', ''], ['', '0', 'x'], ['', 'latest', ''], []]) {
      expect(await c.ask('resume', ...bad), JSON.stringify(bad)).toMatch(errorOf('syntax'));
    }
    expect(await c.ask('resume', '', '2')).toMatch(errorOf('stream_reset'));
    expect(await c.ask('resume', '', '99999999999999999999')).toMatch(errorOf('stream_reset'));
    expect(await c.ask('resume', '', '9007199254740993')).toMatch(errorOf('stream_reset'));
    // after = the head: nothing replayed; leading zeros are still a number
    expect(await c.ask('resume', '', '01')).toMatch(/^resumed,[A-Za-z0-9]{8,16},1$/);
    await expectNoMoreFrames(c);
  });

  it("an epoch that could never be one (wrong characters, too long) is simply not the stream's: stream_reset", async () => {
    const [u] = await f.users('re');
    const c = await f.loggedIn(u!);
    for (const epoch of ['bad!', 'x', 'a'.repeat(17), 'with space']) expect(await c.ask('resume', epoch, '0')).toMatch(errorOf('stream_reset'));
    expect(await c.ask('resume', '', 'latest')).toMatch(/^resumed,[A-Za-z0-9]{8,16},0$/);
  });

  it('resume after a failed one on a synced connection: the failure changed nothing, the next resume streams', async () => {
    const [u, from] = await f.users('rf', 'rffrom');
    const d = await f.loggedIn(from!);
    const c = await f.open();
    expect(await c.ask('login', u!, PW)).toBe('ok');
    expect(await c.ask('sync')).toBe('ok'); // sync after login is allowed too
    expect(await c.ask('resume', 'NotTheEpoch1', '0')).toMatch(errorOf('stream_reset'));
    expect(await d.ask('send', u!, 'held')).toBe('ok');
    await expectNoMoreFrames(c); // synced, never resumed: no entries at all, not even live ones
    const reply = await c.ask('resume', '', '0');
    expect(reply).toMatch(/^resumed,[A-Za-z0-9]{8,16},1$/);
    expect(await c.next()).toBe(`inbox,1,send,${from},held`);
  });
});

describe('under req', () => {
  it('req,<id>,resume: the wrapped resumed reply comes first, then the replayed entries, unwrapped', async () => {
    const [u, from] = await f.users('rq', 'rqfrom');
    const d = await f.loggedIn(from!);
    expect(await d.ask('send', u!, 'one')).toBe('ok');
    const c = await f.open();
    expect(await c.ask('req', '1', 'sync')).toBe('req,1,ok');
    expect(await c.ask('req', '2', 'login', u!, PW)).toBe('req,2,ok');
    c.send('req', '3', 'resume', '', '0');
    const [reply, entry] = await c.nextN(2);
    expect(reply).toMatch(/^req,3,resumed,[A-Za-z0-9]{8,16},1$/);
    expect(entry).toBe(`inbox,1,send,${from},one`);
    c.send('req', '4', 'send', u!, 'self');
    expect(await c.nextN(3)).toEqual([`inbox,2,send,${u},self`, `inbox,3,sent,${u},self`, 'req,4,ok']);
  });
});

describe('a login on an inbox connection', () => {
  it('as another user stops the first stream, drains nothing, and the next resume streams the new user', async () => {
    const [a, b, from] = await f.users('swa', 'swb', 'swf');
    const d = await f.loggedIn(from!);
    expect(await d.ask('send', b!, 'stored-for-b')).toBe('ok');
    const c = await inbox(a!);
    expect(await d.ask('send', a!, 'live-a')).toBe('ok');
    expect(await c.c.next()).toBe(`inbox,1,send,${from},live-a`);
    expect(await c.c.ask('login', b!, PW)).toBe('ok');
    expect(await d.ask('send', a!, 'after-a')).toBe('ok');
    expect(await d.ask('send', b!, 'after-b')).toBe('ok');
    await expectNoMoreFrames(c.c);
    const reply = await c.c.ask('resume', '', '0');
    expect(reply).toMatch(/^resumed,[A-Za-z0-9]{8,16},2$/);
    expect(reply.split(',')[1]).not.toBe(c.epoch); // b's stream, not a's
    expect(await c.c.nextN(2)).toEqual([`inbox,1,send,${from},stored-for-b`, `inbox,2,send,${from},after-b`]);
  });
});

describe('synced connections before their resume', () => {
  it('receive no live entries, and what they did not receive stays for a version 1 login', async () => {
    const [u, from] = await f.users('sy', 'syfrom');
    const s = await f.open();
    expect(await s.ask('sync')).toBe('ok');
    expect(await s.ask('login', u!, PW)).toBe('ok');
    const d = await f.loggedIn(from!);
    expect(await d.ask('send', u!, 'm', '1')).toBe('ok');
    await expectNoMoreFrames(s);
    const v1 = await f.open();
    v1.send('login', u!, PW);
    expect(await v1.nextN(2)).toEqual(['ok', `send,${from},m,1`]);
  });
});

describe('what the inbox holds', () => {
  it('friend pushes are inbox entries on an inbox connection, numbered with the sends', async () => {
    const [a, b] = await f.users('fa', 'fb');
    const sb = await inbox(b!);
    const sa = await inbox(a!);
    expect(await sa.c.ask('friend_request', b!)).toBe('ok');
    expect(await sb.c.next()).toBe(`inbox,1,friend,request,${a}`);
    sb.c.send('friend_accept', a!);
    expect(await sb.c.nextN(2)).toEqual([`inbox,2,friend,added,${a}`, 'ok']);
    expect(await sa.c.next()).toBe(`inbox,1,friend,added,${b}`);
    sa.c.send('send', b!, 'hi');
    expect(await sa.c.nextN(2)).toEqual([`inbox,2,sent,${b},hi`, 'ok']);
    expect(await sb.c.next()).toBe(`inbox,3,send,${a},hi`);
    // a new device replays them all
    const again = await inbox(b!, sb.epoch, '0');
    expect(await waitEntries(again.c, 3)).toEqual([`inbox,1,friend,request,${a}`, `inbox,2,friend,added,${a}`, `inbox,3,send,${a},hi`]);
  });

  it('room messages, joins, leaves, presence and typing reach an inbox connection in their own form, never as entries', async () => {
    const [a, b] = await f.users('na', 'nb');
    const r = `inb-${a}`;
    const sb = await inbox(b!);
    sb.c.send('join', r);
    expect(await sb.c.nextN(2)).toEqual([`room,${r},joined,${b}`, 'ok']);
    const sa = await f.loggedIn(a!);
    sa.send('join', r);
    await sa.nextN(2);
    expect(await sb.c.next()).toBe(`room,${r},joined,${a}`);
    expect(await sa.ask('typing', r, 'start')).toBe('ok');
    expect(await sb.c.next()).toBe(`room,${r},typing,${a},start`);
    sa.send('say', r, 'hello');
    const said = (await sa.nextN(2))[1]!.split(',');
    expect(await sb.c.next()).toBe(`room,${r},msg,${said[2]},${said[3]},${a},hello`);
    sa.close();
    expect(await sb.c.next()).toBe(`presence,${a},offline`);
    const sa2 = await f.loggedIn(a!);
    expect(await sb.c.next()).toBe(`presence,${a},online`);
    sa2.send('leave', r);
    await sa2.nextN(2);
    expect(await sb.c.next()).toBe(`room,${r},left,${a}`);
    expect(entries(sb.c)).toEqual([]);
    // and the stream has nothing of them either
    const probe = await inbox(b!, '', 'latest');
    expect(probe.head).toBe(0);
  });

  it('friend pushes are stored whatever the mailbox holds; only send answers mailbox_full', async () => {
    const [to, s1, s2] = await f.users('mbto', 'mbs', 'mbt');
    const d = await f.loggedIn(s1!);
    for (const n of ['1', '2']) expect(await d.ask('send', to!, 'n', n)).toBe('ok');
    expect(await d.ask('send', to!, 'n', '3')).toMatch(errorOf('mailbox_full'));
    const e = await f.loggedIn(s2!);
    expect(await e.ask('friend_request', to!)).toBe('ok');
    const v1 = await f.open();
    v1.send('login', to!, PW);
    expect(await v1.nextN(4)).toEqual(['ok', `send,${s1},n,1`, `send,${s1},n,2`, `friend,request,${s2}`]);
  });

  it("carbons never count toward the sender's own --mailbox-size", async () => {
    const [me, x, y, z] = await f.users('cme', 'cx', 'cy', 'cz');
    const c = await f.loggedIn(me!);
    // three carbons pile up in me's inbox, more than the mailbox of 2 holds
    for (const to of [x, y, z]) expect(await c.ask('send', to!, 'hi')).toBe('ok');
    c.close();
    await c.closedPromise;
    // me is offline: sends to me are still taken up to the mailbox size
    const d = await f.loggedIn(x!);
    expect(await d.next()).toBe(`send,${me},hi`); // x's own drain
    expect(await d.ask('send', me!, 'back', '1')).toBe('ok');
    expect(await d.ask('send', me!, 'back', '2')).toBe('ok');
    expect(await d.ask('send', me!, 'back', '3')).toMatch(errorOf('mailbox_full'));
    const v1 = await f.open();
    v1.send('login', me!, PW);
    expect(await v1.nextN(3)).toEqual(['ok', `send,${x},back,1`, `send,${x},back,2`]);
    await expectNoMoreFrames(v1);
  });

  it('live entries written to a version 1 connection count as received: a later login drains nothing', async () => {
    const [to, from] = await f.users('lv', 'lvfrom');
    const v1 = await f.loggedIn(to!);
    const d = await f.loggedIn(from!);
    expect(await d.ask('send', to!, 'live')).toBe('ok');
    expect(await v1.next()).toBe(`send,${from},live`);
    v1.close();
    await v1.closedPromise;
    await eventually(async () => {
      const again = await f.open();
      expect(await again.ask('login', to!, PW)).toBe('ok');
      await expectNoMoreFrames(again);
      again.close();
    });
  });
});

describe('once and unavailable', () => {
  it('an unavailable reply is not recorded: the retry with the same key runs', async () => {
    const [me, bob] = await f.users('ou', 'oub');
    const c = await f.loggedIn(me!);
    const store = f.srv.server.core.store;
    const original = store.transaction.bind(store);
    const failure = store.dialect === 'sqlite' ? { code: 'ERR_SQLITE_ERROR', errcode: 13 } : { code: '08006' };
    store.transaction = () => Promise.reject(Object.assign(new Error('the store failed'), failure));
    try {
      expect(await c.ask('once', 'u1', 'send', bob!, 'x')).toMatch(errorOf('unavailable'));
    } finally {
      store.transaction = original;
    }
    expect(await c.ask('once', 'u1', 'send', bob!, 'x')).toBe('ok');
    expect(await c.ask('once', 'u1', 'send', bob!, 'x')).toBe('ok');
    const b = await inbox(bob!, '', 'latest');
    expect(b.head).toBe(1);
  });

  it('a key of 64 characters with an escaped comma in it is one key', async () => {
    const [me, bob] = await f.users('ok', 'okb');
    const c = await f.loggedIn(me!);
    const key = `a,b\\${'k'.repeat(60)}`; // 64 characters once unescaped
    expect(key.length).toBe(64);
    expect(await c.ask('once', key, 'send', bob!, 'x')).toBe('ok');
    expect(await c.ask('once', key, 'send', bob!, 'x')).toBe('ok');
    expect(await c.ask('once', 'a', 'whoami')).toBe(`user,${me}`); // not the same key as its first part
    expect((await inbox(bob!, '', 'latest')).head).toBe(1);
  });
});

describe('GET /api/inbox: its query', () => {
  it('after defaults to 0 and takes latest; limit is 1 to 1000; anything else is 400 syntax; the carbon is there too', async () => {
    const [u, v] = await f.users('hq', 'hqv');
    const d = await f.loggedIn(v!);
    expect(await d.ask('send', u!, 'm', 'a,b')).toBe('ok');
    const s = await f.loggedIn(u!);
    await s.next();
    expect(await s.ask('send', v!, 'r', 'c')).toBe('ok');
    const t = await token(u!);
    const all = await api(base(), 'GET', '/api/inbox', undefined, t);
    expect(all.status).toBe(200);
    expect(all.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(all.json).toEqual({
      epoch: expect.stringMatching(/^[A-Za-z0-9]{8,16}$/),
      head: 2,
      entries: [
        { seq: 1, fields: ['send', v, 'm', 'a,b'] },
        { seq: 2, fields: ['sent', v, 'r', 'c'] },
      ],
    });
    expect((await api(base(), 'GET', '/api/inbox?after=latest', undefined, t)).json).toEqual({ epoch: all.json.epoch, head: 2, entries: [] });
    expect((await api(base(), 'GET', '/api/inbox?after=2', undefined, t)).json.entries).toEqual([]);
    expect((await api(base(), 'GET', '/api/inbox?after=0&limit=1000', undefined, t)).json.entries).toHaveLength(2);
    expect((await api(base(), 'GET', '/api/inbox?after=1&limit=1', undefined, t)).json.entries).toEqual([{ seq: 2, fields: ['sent', v, 'r', 'c'] }]);
    for (const q of ['after=-1', 'after=1.0', 'after=', 'limit=1001', 'limit=-1', 'limit=', 'limit=x', 'limit=1.5']) {
      const r = await api(base(), 'GET', `/api/inbox?${q}`, undefined, t);
      expect(r.status, q).toBe(400);
      expect(r.json, q).toEqual({ error: 'syntax', info: expect.any(String) });
    }
    const reset = await api(base(), 'GET', '/api/inbox?after=3', undefined, t);
    expect(reset.status).toBe(409);
    expect(reset.json).toEqual({ error: 'stream_reset', info: expect.any(String) });
    expect((await api(base(), 'GET', '/api/inbox', undefined, 'not-a-token')).status).toBe(401);
  });
});
