/**
 * CLUSTER.md probed from outside: discrepancies an outside checker found
 * with three nodes on one PostgreSQL database and one Redis, each kept as a
 * test (what test/cluster/cross-node.test.ts and contract-cluster.test.ts
 * already check is not repeated). The parties of every check are on
 * different nodes, and each node serves only what the check needs, so a
 * node has not seen a room or a user before unless the check says so.
 * Postgres project only.
 */
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RawConnection } from '../helpers/raw.ts';
import { removeDir, startServer, storeArgs, tempDir, type TestServer } from '../helpers/server.ts';
import { freshUsers, PW } from '../helpers/users.ts';
import { api } from '../helpers/ws.ts';
import { eventually } from '../helpers/eventually.ts';
import { redisBin, startRedis, type Redis } from '../../tools/redis.ts';
import { createDatabase, startPostgres } from '../../tools/postgres.ts';

const nodes: TestServer[] = [];
const opened: RawConnection[] = [];
let redis: Redis | undefined;

let roomCount = 0;
const freshRoom = (p: string) => `${p}${process.pid % 10000}x${++roomCount}x${Date.now() % 100000}`;

describe.skipIf(redisBin() === undefined)('CLUSTER.md probed from outside', () => {
  beforeAll(async () => {
    redis = await startRedis();
    const store = await storeArgs(tempDir('textserver-probe-db-'));
    for (let i = 1; i <= 3; i++) {
      nodes.push(await startServer([...store, '--bus', redis.url, '--node-id', `pr${process.pid}n${i}`, '--ws-port', '0', '--presence-ttl', '2']));
    }
  });

  afterEach(() => {
    for (const c of opened.splice(0)) c.close();
  });

  afterAll(async () => {
    for (const n of nodes) await n.stop();
    for (const n of nodes) removeDir(n.data);
    await redis?.stop();
  });

  const port = (node: number) => nodes[node - 1]!.port;
  const http = (node: number) => `http://127.0.0.1:${nodes[node - 1]!.server.httpPort}`;
  const users = (...prefixes: string[]) => freshUsers(port(1), ...prefixes);

  async function on(node: number, user: string): Promise<RawConnection> {
    const c = await RawConnection.open(port(node));
    opened.push(c);
    expect(await c.ask('login', user, PW)).toBe('ok');
    return c;
  }

  async function token(node: number, user: string): Promise<string> {
    const res = await api(http(node), 'POST', '/api/login', { user, password: PW });
    expect(res.status).toBe(200);
    return res.json.token as string;
  }

  describe('rooms made on one node, used on another (rule 2)', () => {
    // each node knew a room's id only once it had joined or said there itself: the node's room index
    // (which hears every join) let the request through, and the missing id made it find nothing
    it('history said on node 1 reads the same on a node that never saw the room, over TCP and HTTP', async () => {
      const [a] = await users('hist');
      const room = freshRoom('hist');
      const c1 = await on(1, a!);
      c1.send('join', room);
      expect(await c1.nextN(2)).toEqual([`room,${room},joined,${a}`, 'ok']);
      c1.send('say', room, 'kept');
      const [pushed, reply] = await c1.nextN(2);
      const said = reply!.split(',');
      expect(said[0]).toBe('said');
      expect(pushed).toBe(`room,${room},msg,${said[2]},${said[3]},${a},kept`);
      const line = `history,${room},1,${said[2]},${said[3]},${a},kept`;
      // node 2 hears the join (the user's connection there sees the joined push), never the room's creation
      const c2 = await on(2, a!);
      await eventually(async () => expect(await c2.ask('members', room)).toBe(`members,${room},${a}`));
      expect(await c2.ask('history', room, 'last', '5')).toBe(line);
      const res = await api(http(3), 'GET', `/api/rooms/${room}/messages?last=5`, undefined, await token(3, a!));
      expect(res.json).toEqual({ room, messages: [{ id: Number(said[2]), time: Number(said[3]), user: a, text: 'kept' }] });
    });

    it('a member leaves on a node that never saw the room: left, not not_in_room', async () => {
      const [a] = await users('lv');
      const room = freshRoom('lv');
      const c1 = await on(1, a!);
      c1.send('join', room);
      expect(await c1.nextN(2)).toEqual([`room,${room},joined,${a}`, 'ok']);
      const c2 = await on(2, a!);
      await eventually(async () => expect(await c2.ask('rooms')).toBe(`rooms,${room}`));
      c2.send('leave', room);
      expect(await c2.next()).toBe(`room,${room},left,${a}`);
      expect(await c2.next()).toBe('ok');
      expect(await c1.next()).toBe(`room,${room},left,${a}`);
      expect(await c1.ask('rooms')).toBe('rooms');
    });
  });

  describe("a room's messages said on several nodes", () => {
    // MODULES.md: history comes oldest first and `since,<time>` reads from a time, as KFCR's
    // /messages/since/:ms does; on one node times never go backwards in id order, but each node took
    // its time before the room's lock, so a message committed later could carry an earlier time, and a
    // client reading on from the last time it saw would miss it
    it('carry times that never go backwards in id order', async () => {
      const [a, b] = await users('tma', 'tmb');
      const room = freshRoom('tm');
      const ca = await on(1, a!);
      const cb = await on(2, b!);
      ca.send('join', room);
      expect(await ca.nextN(2)).toEqual([`room,${room},joined,${a}`, 'ok']);
      cb.send('join', room);
      expect(await cb.nextN(2)).toEqual([`room,${room},joined,${b}`, 'ok']);
      const rounds = 20;
      const each = 10;
      for (let r = 0; r < rounds; r++) {
        for (let i = 0; i < each; i++) {
          ca.send('say', room, `a${r}.${i}`);
          cb.send('say', room, `b${r}.${i}`);
        }
        // the replies of this round (and the pushes among them) before the next
        await ca.waitFrames(3 + (r + 1) * each * 3, 20_000);
        await cb.waitFrames(2 + (r + 1) * each * 3, 20_000);
      }
      const history = (await (await on(3, a!)).ask('history', room, 'last', '500')).split(',');
      expect(history[2]).toBe(String(rounds * each * 2));
      const times: number[] = [];
      for (let i = 3; i + 3 < history.length; i += 4) times.push(Number(history[i + 1]));
      const backwards = times.filter((t, i) => i > 0 && t < times[i - 1]!).length;
      expect(backwards).toBe(0);
    }, 60_000);
  });

  describe('login throttling across nodes', () => {
    /** A connection from another address of this machine (127.0.0.2): a stranger to the owner's 127.0.0.1. */
    async function fromElsewhere(node: number): Promise<RawConnection> {
      const socket = await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect({ port: port(node), host: '127.0.0.1', localAddress: '127.0.0.2' }, () => resolve(s));
        s.once('error', reject);
      });
      const c = RawConnection.fromSocket(socket);
      opened.push(c);
      return c;
    }

    // README, "Security and limits": the last addresses a name logged in from count its failures
    // apart, so strangers cannot lock the owner out; each node remembered only its own logins
    it("strangers' guesses on one node do not lock the owner out of the nodes it did not log in on", async () => {
      const [owner] = await users('own');
      (await on(1, owner!)).close();
      const stranger = await fromElsewhere(2);
      for (let i = 0; i < 5; i++) expect(await stranger.ask('login', owner!, 'wrong-password')).toMatch(/^error,nonfatal,wrong_user_or_password/);
      expect(await stranger.ask('login', owner!, PW)).toMatch(/^error,nonfatal,too_many_attempts/);
      for (const node of [1, 2, 3]) (await on(node, owner!)).close();
    });
  });

  describe('PostgreSQL frozen (no answer, connections open: a lost network)', () => {
    // rule 6: /readyz answers 503 within 5 s of PostgreSQL becoming unreachable. The readiness probe
    // waited for its SELECT 1 without a bound, so a frozen server left /readyz at 200 for as long as it lasted
    it('/readyz answers 503 within 5 s, and 200 again with writes working once it answers', async () => {
      const own = await startPostgres();
      let node: TestServer | undefined;
      try {
        const url = await createDatabase(own.url, 'frozen');
        node = await startServer(['--store', url, '--bus', redis!.url, '--node-id', `pr${process.pid}pg`, '--ws-port', '0', '--presence-ttl', '2']);
        const ready = async () => (await fetch(`http://127.0.0.1:${node!.server.httpPort}/readyz`)).status;
        expect(await ready()).toBe(200);
        own.pause();
        try {
          const frozen = performance.now();
          await eventually(async () => expect(await ready()).toBe(503), 10_000, 50);
          expect(performance.now() - frozen).toBeLessThan(5000);
        } finally {
          own.resume();
        }
        await eventually(async () => expect(await ready()).toBe(200), 10_000, 50);
        const c = await RawConnection.open(node.port);
        opened.push(c);
        expect(await c.ask('register', `thawed${process.pid % 1000}`, PW)).toBe('ok');
      } finally {
        own.resume();
        await node?.stop();
        if (node !== undefined) removeDir(node.data);
        await own.stop();
      }
    }, 60_000);
  });

  describe('Redis frozen (no answer, connections open: a lost network)', () => {
    // rule 6 and README: /readyz says 503 within 5 s and each node then counts logins alone; the command
    // connection, kept busy by heartbeats, was never idle long enough for its socket timeout, so every
    // login waited on the throttle's script until Redis answered again
    // the bound: 5 s to tell Redis is gone (rule 6), and at most 2 s more that a login waits for its subscription
    it('logins on every node still answer within 7 s, and all is well once Redis answers again', async () => {
      const [a, b] = await users('fza', 'fzb');
      redis!.pause();
      try {
        const sent = performance.now();
        const early = await RawConnection.open(port(2));
        opened.push(early);
        early.send('login', a!, PW);
        expect(await early.next(15_000)).toBe('ok');
        expect(performance.now() - sent).toBeLessThan(7000);
        const later = await RawConnection.open(port(3));
        opened.push(later);
        const again = performance.now();
        later.send('login', b!, PW);
        expect(await later.next(15_000)).toBe('ok');
        expect(performance.now() - again).toBeLessThan(7000);
      } finally {
        redis!.resume();
      }
      for (const node of [1, 2, 3]) await eventually(async () => expect((await fetch(`${http(node)}/readyz`)).status).toBe(200), 15_000, 50);
      const cb = await on(3, b!);
      const ca = await on(1, a!);
      expect(await ca.ask('send', b!, 'msg', 'after the freeze')).toBe('ok');
      expect(await cb.next()).toBe(`send,${a},msg,after the freeze`);
    }, 60_000);
  });
});
