/**
 * CLUSTER.md rule 2: three nodes on one PostgreSQL database and one Redis
 * act as one server. Every check puts the two parties on different nodes.
 * Only in the postgres project (a SQLite file is one process's).
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawConnection } from '../helpers/raw.ts';
import { removeDir, startServer, storeArgs, tempDir, type TestServer } from '../helpers/server.ts';
import { expectNoMoreFrames, freshUsers, loggedIn, PW } from '../helpers/users.ts';
import { api, WsConnection } from '../helpers/ws.ts';
import { eventually } from '../helpers/eventually.ts';
import { redisBin, startRedis, type Redis } from '../../tools/redis.ts';

const nodes: TestServer[] = [];
const opened: RawConnection[] = [];
let ports: number[] = [];
/** A Redis of this file's own: a cluster is one database and one Redis (user ids name Redis keys). */
let redis: Redis | undefined;
/** The cluster's database, for a test that holds a drain with a row lock. */
let storeUrl = '';

describe.skipIf(redisBin() === undefined)('three nodes, one server', () => {
  beforeAll(async () => {
    redis = await startRedis();
    const store = await storeArgs(tempDir('textserver-cluster-db-'));
    storeUrl = store[1]!;
    for (let i = 1; i <= 3; i++) {
      nodes.push(
        await startServer([
          ...store,
          '--bus',
          redis.url,
          '--node-id',
          `x${process.pid}n${i}`,
          '--ws-port',
          '0',
          '--presence-ttl',
          '2',
          '--typing-timeout',
          '0.5',
        ]),
      );
    }
    ports = nodes.map((n) => n.port);
  });

  afterAll(async () => {
    for (const c of opened) c.close();
    for (const n of nodes) await n.stop();
    for (const n of nodes) removeDir(n.data);
    await redis?.stop();
  });

  const on = (node: number, user: string) => loggedIn(ports[node]!, user, opened);

  it('send reaches a version 1 connection on another node, live, and the sender gets its ok', async () => {
    const [a, b] = await freshUsers(ports[0]!, 'ca', 'cb');
    const ca = await on(0, a!);
    const cb = await on(1, b!);
    expect(await ca.ask('send', b!, 'msg', 'hello')).toBe('ok');
    expect(await cb.next()).toBe(`send,${a},msg,hello`);
    // received once there: a later login of b on a third node gets nothing stored
    await eventually(async () => {
      const again = await RawConnection.open(ports[2]!);
      opened.push(again);
      expect(await again.ask('login', b!, PW)).toBe('ok');
      expect(await again.ask('nop')).toBe('');
    });
  });

  it('a message stored while the recipient was offline follows their login on another node', async () => {
    const [a, b] = await freshUsers(ports[0]!, 'sa', 'sb');
    const ca = await on(0, a!);
    expect(await ca.ask('send', b!, 'msg', 'while away')).toBe('ok');
    const cb = await RawConnection.open(ports[2]!);
    opened.push(cb);
    expect(await cb.ask('login', b!, PW)).toBe('ok');
    expect(await cb.next()).toBe(`send,${a},msg,while away`);
  });

  it('every version 1 connection of the recipient on another node gets each send once, in order', async () => {
    const [a, b] = await freshUsers(ports[0]!, 'pa', 'pb');
    const ca = await on(0, a!);
    // all of b's connections on node 1: node 0 sees none of them, so it stores each send as not yet received
    const cbs = [await on(1, b!), await on(1, b!), await on(1, b!)];
    const sent = [0, 1, 2, 3, 4].map((i) => `send,${a},msg,hello ${i}`);
    for (let i = 0; i < sent.length; i++) ca.send('send', b!, 'msg', `hello ${i}`);
    expect(await ca.nextN(sent.length)).toEqual(sent.map(() => 'ok'));
    for (const cb of cbs) expect(await cb.nextN(sent.length)).toEqual(sent);
    for (const cb of cbs) await expectNoMoreFrames(cb);
    // received there: a later login of b gets nothing stored, and the connections got nothing twice
    await eventually(async () => {
      const again = await on(2, b!);
      expect(await again.ask('nop')).toBe('');
      again.close();
    });
    for (const cb of cbs) await expectNoMoreFrames(cb);
  });

  it('while a stored backlog drains to one version 1 connection, what is sent meanwhile reaches every connection once, after the backlog on the draining one', async () => {
    const [a, b] = await freshUsers(ports[0]!, 'da', 'db');
    const ca = await on(0, a!);
    // stored while b is offline: more than one page (64) of a drain
    const backlog = Array.from({ length: 100 }, (_, i) => `send,${a},msg,old ${i}`);
    for (let i = 0; i < backlog.length; i++) ca.send('send', b!, 'msg', `old ${i}`);
    expect(new Set(await ca.nextN(backlog.length))).toEqual(new Set(['ok']));
    // the backlog's rows locked: the drain writes its first page, then waits for its received mark
    const db = new pg.Client({ connectionString: storeUrl });
    await db.connect();
    try {
      await db.query('BEGIN');
      await db.query('SELECT 1 FROM inbox WHERE user_id = (SELECT id FROM users WHERE name = $1) FOR UPDATE', [b]);
      const c1 = await on(1, b!); // its login starts the drain
      expect(await c1.nextN(64)).toEqual(backlog.slice(0, 64));
      const c2 = await on(1, b!); // no backlog for it: one drain per user
      const fresh = [0, 1, 2, 3, 4].map((i) => `send,${a},msg,new ${i}`);
      for (let i = 0; i < fresh.length; i++) ca.send('send', b!, 'msg', `new ${i}`);
      expect(await ca.nextN(fresh.length)).toEqual(fresh.map(() => 'ok'));
      // live on the connection that does not drain, while the drain still holds
      expect(await c2.nextN(fresh.length)).toEqual(fresh);
      await db.query('COMMIT');
      // the draining connection: the rest of the backlog, then what was sent meanwhile, each once
      expect(await c1.nextN(backlog.length - 64 + fresh.length)).toEqual([...backlog.slice(64), ...fresh]);
      await expectNoMoreFrames(c2);
      // later sends go live to both, once
      expect(await ca.ask('send', b!, 'msg', 'last')).toBe('ok');
      expect(await c1.next()).toBe(`send,${a},msg,last`);
      expect(await c2.next()).toBe(`send,${a},msg,last`);
      await eventually(async () => {
        const again = await on(2, b!);
        expect(await again.ask('nop')).toBe('');
        again.close();
      });
      await expectNoMoreFrames(c1);
      await expectNoMoreFrames(c2);
    } finally {
      await db.end();
    }
  });

  it('an inbox connection streams entries appended on other nodes, and resumes on another node with no gap and no repeat', async () => {
    const [a, b] = await freshUsers(ports[0]!, 'ia', 'ib');
    const ca = await on(0, a!);
    const cb = await on(1, b!);
    const r = (await cb.ask('resume', '', '0')).split(',');
    expect(r[0]).toBe('resumed');
    const epoch = r[1]!;
    for (let i = 1; i <= 5; i++) expect(await ca.ask('send', b!, 'n', String(i))).toBe('ok');
    expect(await cb.nextN(5)).toEqual([1, 2, 3, 4, 5].map((i) => `inbox,${i},send,${a},n,${i}`));
    cb.close();
    for (let i = 6; i <= 7; i++) expect(await ca.ask('send', b!, 'n', String(i))).toBe('ok');
    // an inbox connection (sync before its login): stored entries come through the resume, not a drain
    const again = await RawConnection.open(ports[2]!);
    opened.push(again);
    expect(await again.ask('sync')).toBe('ok');
    expect(await again.ask('login', b!, PW)).toBe('ok');
    again.send('resume', epoch, '3');
    expect(await again.nextN(5)).toEqual([`resumed,${epoch},7`, ...[4, 5, 6, 7].map((i) => `inbox,${i},send,${a},n,${i}`)]);
    expect(await ca.ask('send', b!, 'n', '8')).toBe('ok');
    expect(await again.next()).toBe(`inbox,8,send,${a},n,8`);
  });

  it('rooms: join, say, members, leave and history across nodes', async () => {
    const [a, b, c] = await freshUsers(ports[0]!, 'ra', 'rb', 'rc');
    const room = `r${process.pid}x${Date.now() % 100000}`;
    const ca = await on(0, a!);
    const cb = await on(1, b!);
    const cc = await on(2, c!);
    ca.send('join', room);
    expect(await ca.nextN(2)).toEqual([`room,${room},joined,${a}`, 'ok']);
    cb.send('join', room);
    expect(await cb.nextN(2)).toEqual([`room,${room},joined,${b}`, 'ok']);
    expect(await ca.next()).toBe(`room,${room},joined,${b}`);
    expect(await cb.ask('members', room)).toBe(`members,${room},${[a, b].sort().join(',')}`);
    expect(await eventually(() => ca.ask('members', room).then((m) => (m.split(',').length === 4 ? m : Promise.reject(new Error(m)))))).toBe(
      `members,${room},${[a, b].sort().join(',')}`,
    );
    // said right after c's join reply: the node of c has the room's channel already (rule 5)
    cc.send('join', room);
    expect(await cc.nextN(2)).toEqual([`room,${room},joined,${c}`, 'ok']);
    expect(await ca.next()).toBe(`room,${room},joined,${c}`);
    ca.send('say', room, 'hi all');
    const [own, reply] = await ca.nextN(2);
    const said = reply!.split(',');
    expect(said[0]).toBe('said');
    const msg = `room,${room},msg,${said[2]},${said[3]},${a},hi all`;
    expect(own).toBe(msg);
    expect(await cc.next()).toBe(msg);
    expect(await cb.nextN(2)).toEqual([`room,${room},joined,${c}`, msg]);
    cb.send('leave', room);
    expect(await cb.nextN(2)).toEqual([`room,${room},left,${b}`, 'ok']);
    expect(await ca.next()).toBe(`room,${room},left,${b}`);
    expect(await cc.next()).toBe(`room,${room},left,${b}`);
    expect(await cc.ask('history', room, 'last', '5')).toBe(`history,${room},1,${said[2]},${said[3]},${a},hi all`);
  });

  it('friends on different nodes hear each other come online and go offline, once', async () => {
    const [a, b] = await freshUsers(ports[0]!, 'fa', 'fb');
    const ca = await on(0, a!);
    const cb0 = await on(1, b!);
    // b's online announcement may reach a once they are friends (it reads b's friends after b's login): skipped if it comes
    const next = async (c: RawConnection) => {
      const f = await c.next();
      return f === `presence,${b},online` || f === `presence,${a},online` ? c.next() : f;
    };
    ca.send('friend_request', b!);
    expect(await next(ca)).toBe('ok');
    expect(await next(cb0)).toBe(`friend,request,${a}`);
    cb0.send('friend_accept', a!);
    expect([await next(cb0), await next(cb0)]).toEqual([`friend,added,${a}`, 'ok']);
    expect(await next(ca)).toBe(`friend,added,${b}`);
    cb0.close();
    expect(await ca.next()).toBe(`presence,${b},offline`);
    expect(await ca.ask('presence', b!)).toMatch(new RegExp(`^presence,${b},offline,\\d+$`));
    const cb = await on(2, b!);
    expect(await ca.next()).toBe(`presence,${b},online`);
    expect(await ca.ask('presence', b!)).toBe(`presence,${b},online`);
    // a second connection on another node is no change
    const cb2 = await on(1, b!);
    expect(await ca.ask('nop')).toBe('');
    cb2.close();
    cb.close();
    expect(await ca.next()).toBe(`presence,${b},offline`);
  });

  it('typing reaches room members on other nodes and stops by itself', async () => {
    const [a, b] = await freshUsers(ports[0]!, 'ta', 'tb');
    const room = `t${process.pid}x${Date.now() % 100000}`;
    const ca = await on(0, a!);
    const cb = await on(1, b!);
    ca.send('join', room);
    expect(await ca.nextN(2)).toEqual([`room,${room},joined,${a}`, 'ok']);
    cb.send('join', room);
    expect(await cb.nextN(2)).toEqual([`room,${room},joined,${b}`, 'ok']);
    expect(await ca.next()).toBe(`room,${room},joined,${b}`);
    expect(await ca.ask('typing', room, 'start')).toBe('ok');
    expect(await cb.next()).toBe(`room,${room},typing,${a},start`);
    // --typing-timeout 0.5: it stops by itself, and the stop crosses too
    expect(await cb.next()).toBe(`room,${room},typing,${a},stop`);
    expect(await cb.ask('typing', room, 'start')).toBe('ok');
    expect(await ca.next()).toBe(`room,${room},typing,${b},start`);
    expect(await cb.ask('typing', room, 'stop')).toBe('ok');
    expect(await ca.next()).toBe(`room,${room},typing,${b},stop`);
  });

  it('an HTTP token from one node logs in on the others, over HTTP and WebSocket', async () => {
    const [a, b] = await freshUsers(ports[0]!, 'ha', 'hb');
    const cb = await on(2, b!);
    const base = (i: number) => `http://127.0.0.1:${nodes[i]!.server.httpPort}`;
    const token = (await api(base(0), 'POST', '/api/login', { user: a, password: PW })).json.token as string;
    expect((await api(base(1), 'POST', `/api/send/${b}`, { command: 'msg', args: ['via http'] }, token)).status).toBe(204);
    expect(await cb.next()).toBe(`send,${a},msg,via http`);
    const ws = await WsConnection.open(`ws://127.0.0.1:${nodes[2]!.server.wsPort}/ws`);
    expect(await ws.ask(`token,${token}`)).toBe('ok');
    expect(await ws.ask('req,1,whoami')).toBe(`req,1,user,${a!.toLowerCase()}`);
    // logging the token out on one node ends its WebSocket login on another
    expect((await api(base(1), 'POST', '/api/logout', undefined, token)).status).toBe(204);
    await eventually(async () => expect(await ws.ask('whoami')).toMatch(/^error,nonfatal,not_logged_in/));
    expect((await api(base(2), 'GET', '/api/me', undefined, token)).status).toBe(401);
    ws.close();
  });

  it('failed logins count for the whole cluster', async () => {
    const [a] = await freshUsers(ports[0]!, 'la');
    for (let i = 0; i < 5; i++) {
      const c = await RawConnection.open(ports[i % 3]!);
      opened.push(c);
      expect(await c.ask('login', a!, 'wrong-password')).toMatch(/^error,nonfatal,wrong_user_or_password/);
    }
    const c = await RawConnection.open(ports[1]!);
    opened.push(c);
    expect(await c.ask('login', a!, PW)).toMatch(/^error,nonfatal,too_many_attempts/);
  });

  it('each node answers /readyz and counts its own bus traffic in /metrics', async () => {
    for (const n of nodes) {
      const base = `http://127.0.0.1:${n.server.httpPort}`;
      expect((await fetch(`${base}/readyz`)).status).toBe(200);
      const text = await (await fetch(`${base}/metrics`)).text();
      expect(text).toMatch(/^textserver_bus_up 1$/m);
      expect(Number(/^textserver_bus_messages_total\{result="received"\} (\d+)$/m.exec(text)?.[1])).toBeGreaterThan(0);
      expect(text).toMatch(/^textserver_presence_local_users \d+$/m);
    }
  });

  it("a room joined over HTTP on one node reaches the member's connection on another, and messages said on a third", async () => {
    const [a, b] = await freshUsers(ports[0]!, 'ja', 'jb');
    const room = `j${process.pid}x${Date.now() % 100000}`;
    const ca = await on(0, a!);
    const cb = await on(2, b!);
    cb.send('join', room);
    expect(await cb.nextN(2)).toEqual([`room,${room},joined,${b}`, 'ok']);
    const base = `http://127.0.0.1:${nodes[1]!.server.httpPort}`;
    const token = (await api(base, 'POST', '/api/login', { user: a, password: PW })).json.token as string;
    expect((await api(base, 'POST', `/api/rooms/${room}/join`, undefined, token)).status).toBe(204);
    expect(await ca.next()).toBe(`room,${room},joined,${a}`);
    expect(await cb.next()).toBe(`room,${room},joined,${a}`);
    cb.send('say', room, 'to a on node 0');
    const [own, reply] = await cb.nextN(2);
    expect(reply).toMatch(/^said,/);
    expect(await ca.next()).toBe(own);
    expect(await ca.ask('rooms')).toBe(`rooms,${room}`);
  });

  it("a KFCR post on one node reaches the KFCR room's members on another", async () => {
    const [a] = await freshUsers(ports[0]!, 'ka');
    const ca = await on(0, a!);
    ca.send('join', 'kfcr');
    expect(await ca.nextN(2)).toEqual([`room,kfcr,joined,${a}`, 'ok']);
    const res = await fetch(`http://127.0.0.1:${nodes[1]!.server.httpPort}/messages/post`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: 'guest', content: 'from kfcr' }),
    });
    expect(res.status).toBe(201);
    expect(await ca.next()).toMatch(/^room,kfcr,msg,\d+,\d+,~guest,from kfcr$/);
  });
});
