/**
 * STORAGE.md section 3.5 from the outside, with real faults instead of a
 * patched `transaction`: a full disk (a 2 MiB tmpfs under a SQLite --data)
 * and a PostgreSQL that stops answering without closing its sockets (every
 * process of it SIGSTOPped: what a network partition or a hung host looks
 * like). Each client must get an answer (`unavailable`, HTTP 503), /readyz
 * must say 503 for as long as the store is down, and once the fault is gone
 * the same connections write again and nothing that was refused shows up.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import pg from 'pg';
import { eventually } from '../helpers/eventually.ts';
import { RawConnection } from '../helpers/raw.ts';
import { removeDir, spawnServer, startServer, tempDir, testPostgres, type TestServer } from '../helpers/server.ts';
import { api } from '../helpers/ws.ts';
import { errorOf, expectNoMoreFrames, PW } from '../helpers/users.ts';
import { createDatabase, startPostgres } from '../../tools/postgres.ts';

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const isRoot = process.getuid?.() === 0;

async function started(args: string[], data?: string): Promise<{ srv: TestServer; base: string; ready(): Promise<number> }> {
  const srv = await startServer(['--http-port', '0', '--user-rate', '0', ...args], data);
  cleanup.push(() => srv.stop());
  const base = `http://127.0.0.1:${srv.server.httpPort}`;
  return { srv, base, ready: async () => (await fetch(`${base}/readyz`)).status };
}

async function open(port: number): Promise<RawConnection> {
  const c = await RawConnection.open(port);
  cleanup.push(() => c.close());
  return c;
}

/** A 2 MiB tmpfs with a --data directory in it, unmounted after the test; `fill` takes what is left of it. */
function smallDisk(): { data: string; fill(): void; free(): void } {
  const mnt = tempDir('textserver-full-');
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt]);
  cleanup.push(() => {
    execFileSync('umount', [mnt]);
    removeDir(mnt);
  });
  const data = join(mnt, 'data');
  mkdirSync(data);
  const filler = join(mnt, 'fill');
  return {
    data,
    fill() {
      const fd = openSync(filler, 'w');
      const block = Buffer.alloc(4096, 1);
      try {
        for (;;) writeSync(fd, block);
      } catch (err) {
        expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
      } finally {
        closeSync(fd);
      }
    },
    free() {
      rmSync(filler);
    },
  };
}

describe.skipIf(testPostgres() !== undefined || !isRoot)('SQLite on a full disk (a 2 MiB tmpfs)', () => {
  it('refuses every kind of write with unavailable, keeps /readyz at 503 until the disk has room, then writes again', { timeout: 30_000 }, async () => {
    const disk = smallDisk();
    const { srv, base, ready } = await started([], disk.data);
    const c = await open(srv.port);
    for (const u of ['fulla', 'fullb', 'fullc', 'fulli']) expect(await c.ask('register', u, PW)).toBe('ok');
    // an inbox client (DELIVERY.md), online: a send to it is an inbox entry
    const inbox = await open(srv.port);
    expect(await inbox.ask('sync')).toBe('ok');
    expect(await inbox.ask('login', 'fulli', PW)).toBe('ok');
    expect(await inbox.ask('resume', '', '0')).toMatch(/^resumed,[A-Za-z0-9]+,0$/);
    const a = await open(srv.port);
    expect(await a.ask('login', 'fulla', PW)).toBe('ok');
    a.send('join', 'fullroom');
    expect(await a.nextN(2)).toEqual(['room,fullroom,joined,fulla', 'ok']);
    a.send('say', 'fullroom', 'kept');
    expect((await a.nextN(2))[1]).toMatch(/^said,fullroom,/);
    const token = (await api(base, 'POST', '/api/login', { user: 'fullb', password: PW })).json.token as string;
    expect(await ready()).toBe(200);

    disk.fill();
    const big = 'x'.repeat(8000); // more than a page: it cannot fit in what SQLite has already allocated
    expect(await a.ask('say', 'fullroom', big)).toMatch(errorOf('unavailable'));
    expect(await a.ask('join', 'fullroom2')).toMatch(errorOf('unavailable'));
    expect(await a.ask('register', 'fulld', PW)).toMatch(errorOf('unavailable'));
    expect(await a.ask('send', 'fullc', 'msg', big)).toMatch(errorOf('unavailable'));
    expect(await a.ask('once', 'fullkey', 'send', 'fullc', 'msg', big)).toMatch(errorOf('unavailable'));
    expect(await a.ask('friend_request', 'fullb')).toMatch(errorOf('unavailable'));
    expect(await a.ask('send', 'fulli', 'msg', big)).toMatch(errorOf('unavailable'));
    const refused = await api(base, 'POST', '/api/rooms/fullroom3/join', undefined, token);
    expect(refused).toMatchObject({ status: 503, json: { error: 'unavailable' } });
    expect(refused.headers.get('retry-after')).toBe('1');
    const unavailable = { status: 503, json: { error: 'unavailable' } };
    expect(await api(base, 'POST', '/api/register', { user: 'fulle', password: PW })).toMatchObject(unavailable);
    expect(await api(base, 'POST', '/api/login', { user: 'fullb', password: PW })).toMatchObject(unavailable);
    expect(await api(base, 'POST', '/api/send/fullc', { command: 'msg', args: [big] }, token)).toMatchObject(unavailable);
    expect(await api(base, 'POST', '/messages/post', { user: 'kfcr', content: big })).toMatchObject(unavailable);
    expect(await ready()).toBe(503);

    // a request whose transaction writes nothing succeeds on a full disk: that does not make the store writable again
    const b = await open(srv.port);
    expect(await b.ask('login', 'fullb', PW)).toBe('ok');
    expect(await b.ask('whoami')).toBe('user,fullb');
    expect(await ready()).toBe(503);

    disk.free();
    await eventually(async () => expect(await ready()).toBe(200), 10_000, 50);
    expect(await a.ask('history', 'fullroom', 'last', '10')).toMatch(/^history,fullroom,1,\d+,\d+,fulla,kept$/);
    expect(await a.ask('rooms')).toBe('rooms,fullroom');
    expect(await b.ask('friend_requests')).toBe('friend_requests');
    // the once key was not recorded: it runs now
    expect(await a.ask('once', 'fullkey', 'send', 'fullc', 'msg', 'after')).toBe('ok');
    await expectNoMoreFrames(inbox);
    expect(await a.ask('send', 'fulli', 'msg', 'after')).toBe('ok');
    expect(await inbox.next()).toBe('inbox,1,send,fulla,msg,after');
    expect(await api(base, 'POST', '/api/register', { user: 'fulle', password: PW })).toMatchObject({ status: 201 });
    const cc = await open(srv.port);
    expect(await cc.ask('login', 'fullc', PW)).toBe('ok');
    expect(await cc.next()).toBe('send,fulla,msg,after');
    await expectNoMoreFrames(cc);
    expect(await a.ask('register', 'fulld', PW)).toBe('ok');
    expect(await api(base, 'POST', '/api/rooms/fullroom3/join', undefined, token)).toMatchObject({ status: 204 });
  });

  it('a write that fails in the background (the stored messages of a login, which cannot be deleted) also says 503, and they follow once the disk has room', { timeout: 30_000 }, async () => {
    const disk = smallDisk();
    const { srv, ready } = await started([], disk.data);
    const c = await open(srv.port);
    for (const u of ['drainfa', 'drainfb']) expect(await c.ask('register', u, PW)).toBe('ok');
    expect(await c.ask('login', 'drainfa', PW)).toBe('ok');
    for (let i = 0; i < 5; i++) expect(await c.ask('send', 'drainfb', 'msg', `m${i}`)).toBe('ok');
    disk.fill();
    const b = await open(srv.port);
    expect(await b.ask('login', 'drainfb', PW)).toBe('ok');
    // nothing else writes: the drain's own failure is the only sign that the disk is full
    await eventually(async () => expect(await ready()).toBe(503), 5000, 50);
    disk.free();
    await eventually(async () => expect(await ready()).toBe(200), 10_000, 50);
    expect(await b.nextN(5, 10_000)).toEqual([0, 1, 2, 3, 4].map((i) => `send,drainfa,msg,m${i}`));
    await expectNoMoreFrames(b);
  });
  it('a read never shows a write whose commit then fails: a history taken while a say is refused does not hold it', { timeout: 30_000 }, async () => {
    const disk = smallDisk();
    const { srv } = await started([], disk.data);
    const c = await open(srv.port);
    for (const u of ['ghosta', 'ghostb']) expect(await c.ask('register', u, PW)).toBe('ok');
    const a = await open(srv.port);
    const b = await open(srv.port);
    expect(await a.ask('login', 'ghosta', PW)).toBe('ok');
    expect(await b.ask('login', 'ghostb', PW)).toBe('ok');
    a.send('join', 'ghostroom');
    expect(await a.nextN(2)).toEqual(['room,ghostroom,joined,ghosta', 'ok']);
    b.send('join', 'ghostroom');
    expect(await b.nextN(2)).toEqual(['room,ghostroom,joined,ghostb', 'ok']);
    expect(await a.next()).toBe('room,ghostroom,joined,ghostb');
    disk.fill();
    // the say and the history reach the server together, so both run before the end of the turn's batch
    for (let i = 0; i < 40; i++) {
      const text = `ghost${i}:${'g'.repeat(6000)}`;
      a.socket.cork();
      b.socket.cork();
      a.send('say', 'ghostroom', text);
      b.send('history', 'ghostroom', 'last', '5');
      a.socket.uncork();
      b.socket.uncork();
      const said = await a.next();
      const history = await b.next();
      if (said.startsWith('said,')) continue; // the disk had room for this one after all
      expect(said).toMatch(errorOf('unavailable'));
      expect(history).not.toContain(`ghost${i}:`);
    }
    disk.free();
  });
});

/** The process ids of a PostgreSQL cluster: the postmaster and its children. */
function postgresPids(dir: string): string[] {
  const postmaster = readFileSync(join(dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]!.trim();
  return [postmaster, ...execFileSync('pgrep', ['-P', postmaster]).toString().trim().split(/\s+/)];
}

describe.skipIf(testPostgres() === undefined)('PostgreSQL that stops answering (SIGSTOP: a hung host, a partition)', () => {
  it('answers a write waiting on it with unavailable, /readyz 503 within 5 s, and recovers once it answers again', { timeout: 60_000 }, async () => {
    const cluster = await startPostgres();
    cleanup.push(() => cluster.stop());
    const { srv, ready } = await started(['--store', await createDatabase(cluster.url, 'frozen')]);
    const c = await open(srv.port);
    for (const u of ['froza', 'frozb']) expect(await c.ask('register', u, PW)).toBe('ok');
    const a = await open(srv.port);
    expect(await a.ask('login', 'froza', PW)).toBe('ok');
    expect(await ready()).toBe(200);

    const pids = postgresPids(cluster.dir);
    execFileSync('kill', ['-STOP', ...pids]);
    let resumed = false;
    const resume = () => {
      if (!resumed) execFileSync('kill', ['-CONT', ...pids]);
      resumed = true;
    };
    cleanup.push(resume);
    const frozenAt = performance.now();
    a.send('send', 'frozb', 'msg', 'frozen');
    // CLUSTER.md rule 6: 503 within 5 s of PostgreSQL becoming unreachable (1 s of slack for a loaded machine)
    await eventually(async () => expect(await ready()).toBe(503), 6000, 100);
    // every request gets an answer: the pool's own bounds are 10 s, a loaded machine gets 5 s more
    expect(await a.next(15_000)).toMatch(errorOf('unavailable'));
    expect(performance.now() - frozenAt).toBeLessThan(15_000);
    expect(await a.ask('whoami')).toBe('user,froza');

    resume();
    await eventually(async () => expect(await ready()).toBe(200), 10_000, 100);
    await eventually(async () => expect(await a.ask('send', 'frozb', 'msg', 'after')).toBe('ok'), 10_000, 100);
    const b = await open(srv.port);
    expect(await b.ask('login', 'frozb', PW)).toBe('ok');
    expect(await b.next()).toBe('send,froza,msg,after');
    await expectNoMoreFrames(b);
  });
});

describe.skipIf(testPostgres() === undefined)('PostgreSQL that takes no writes (a standby after a failover, default_transaction_read_only)', () => {
  it('answers writes with unavailable and /readyz 503 while it only reads, and writes again once it takes them', { timeout: 30_000 }, async () => {
    const base = testPostgres()!;
    const name = `readonly_${process.pid}`;
    const { srv, ready } = await started(['--store', await createDatabase(base, name)]);
    const c = await open(srv.port);
    expect(await c.ask('register', 'roa', PW)).toBe('ok');
    expect(await c.ask('login', 'roa', PW)).toBe('ok');
    // what a failover to a standby looks like to the server: its sessions are cut, and new ones may only read
    const admin = async (setting: string) => {
      const u = new URL(base);
      const k = new pg.Client({ connectionString: u.toString() });
      await k.connect();
      try {
        await k.query(`ALTER DATABASE ${name} ${setting}`);
        await k.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, [name]);
      } finally {
        await k.end();
      }
    };
    await admin('SET default_transaction_read_only = on');
    cleanup.push(() => admin('RESET default_transaction_read_only'));
    // the first writes may meet pooled connections that were cut; every later one meets a read-only session
    for (const room of ['ro1', 'ro2', 'ro3', 'ro4']) expect(await c.ask('join', room)).toMatch(errorOf('unavailable'));
    expect(await c.ask('register', 'rob', PW)).toMatch(errorOf('unavailable'));
    expect(await c.ask('whoami')).toBe('user,roa');
    await eventually(async () => expect(await ready()).toBe(503), 6000, 100);
    // and stays so with no write to remind it: a server that answers SELECT 1 but takes no write is not up (the probe runs every 2 s)
    const until = performance.now() + 3000;
    while (performance.now() < until) expect(await ready()).toBe(503);

    await admin('RESET default_transaction_read_only');
    await eventually(async () => expect(await ready()).toBe(200), 10_000, 100);
    await eventually(async () => expect(await c.ask('register', 'rob', PW)).toBe('ok'), 10_000, 100);
  });
});

describe.skipIf(testPostgres() === undefined)('PostgreSQL that closes idle sessions (idle_session_timeout, as some operators set it)', () => {
  it('is not down: /readyz stays 200 and writes go on while it closes the idle pooled connections', { timeout: 30_000 }, async () => {
    const base = testPostgres()!;
    const name = `idle_${process.pid}`;
    const url = await createDatabase(base, name);
    const k = new pg.Client({ connectionString: base });
    await k.connect();
    await k.query(`ALTER DATABASE ${name} SET idle_session_timeout = '1s'`).finally(() => k.end());
    const { srv, ready } = await started(['--store', url]);
    const c = await open(srv.port);
    expect(await c.ask('register', 'idlea', PW)).toBe('ok');
    // every pooled connection idle for a second is closed by the server (FATAL 57P05): for 4 s, nobody may see 503
    const until = performance.now() + 4000;
    while (performance.now() < until) expect(await ready()).toBe(200);
    expect(await c.ask('register', 'idleb', PW)).toBe('ok');
  });
});

describe.skipIf(testPostgres() === undefined)('PostgreSQL that cancels a statement (the operator\'s statement_timeout, another application\'s lock)', () => {
  it('answers the request unavailable, not unhandled, keeps /readyz at 200, and the same write succeeds once the lock is gone', { timeout: 30_000 }, async () => {
    const base = testPostgres()!;
    const name = `cancel_${process.pid}`;
    const url = await createDatabase(base, name);
    const k = new pg.Client({ connectionString: base });
    await k.connect();
    await k.query(`ALTER DATABASE ${name} SET statement_timeout = '300ms'`).finally(() => k.end());
    const { srv, ready } = await started(['--store', url]);
    const c = await open(srv.port);
    for (const u of ['cta', 'ctb']) expect(await c.ask('register', u, PW)).toBe('ok');
    expect(await c.ask('login', 'cta', PW)).toBe('ok');
    expect(await c.ask('send', 'ctb', 'first')).toBe('ok');
    // another application holds the inbox streams' rows: the send's statement waits, and PostgreSQL cancels it
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    cleanup.push(() => holder.end());
    await holder.query('BEGIN; SET LOCAL statement_timeout = 0');
    await holder.query('SELECT 1 FROM inbox_streams FOR UPDATE');
    expect(await c.ask('send', 'ctb', 'held')).toMatch(errorOf('unavailable'));
    expect(await ready()).toBe(200);
    await holder.query('ROLLBACK');
    expect(await c.ask('send', 'ctb', 'again')).toBe('ok');
    // nothing of the refused send was kept: b finds the two acknowledged ones only
    const b = await open(srv.port);
    expect(await b.ask('login', 'ctb', PW)).toBe('ok');
    expect(await b.nextN(2)).toEqual(['send,cta,first', 'send,cta,again']);
    await expectNoMoreFrames(b);
  });
});

describe.skipIf(testPostgres() === undefined)("PostgreSQL that refuses the server's password (rotated under it)", () => {
  it('answers writes with unavailable and /readyz 503 while it refuses, and writes again once the password is back', { timeout: 30_000 }, async () => {
    const cluster = await startPostgres({ password: 'superuser pw' });
    cleanup.push(() => cluster.stop());
    const admin = async (query: string) => {
      const k = new pg.Client({ connectionString: cluster.url });
      await k.connect();
      try {
        await k.query(query);
      } finally {
        await k.end();
      }
    };
    await admin(`CREATE ROLE rotated LOGIN PASSWORD 'before'`);
    await admin('CREATE DATABASE rotated OWNER rotated');
    const { srv, ready } = await started(['--store', `postgres://rotated:before@127.0.0.1:${cluster.port}/rotated`]);
    const c = await open(srv.port);
    expect(await c.ask('register', 'rota', PW)).toBe('ok');
    expect(await c.ask('login', 'rota', PW)).toBe('ok');
    // rotated, and the sessions made with the old one cut: every new connection is refused
    await admin(`ALTER ROLE rotated PASSWORD 'after'`);
    await admin(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'rotated'`);
    for (const room of ['rot1', 'rot2', 'rot3', 'rot4']) expect(await c.ask('join', room)).toMatch(errorOf('unavailable'));
    expect(await c.ask('whoami')).toBe('user,rota');
    await eventually(async () => expect(await ready()).toBe(503), 6000, 100);

    await admin(`ALTER ROLE rotated PASSWORD 'before'`);
    await eventually(async () => expect(await ready()).toBe(200), 10_000, 100);
    await eventually(async () => expect(await c.ask('register', 'rotb', PW)).toBe('ok'), 10_000, 100);
  });
});

describe('SIGKILL right after acknowledgements', () => {
  it('keeps every acknowledged say, join, friend request, inbox entry, once send and HTTP post', { timeout: 60_000 }, async () => {
    const data = tempDir('textserver-kill-');
    cleanup.push(() => removeDir(data));
    const spawnIt = async () => {
      const s = await spawnServer(['--data', data, '--http-port', '0', '--user-rate', '0']);
      cleanup.push(() => s.proc.kill('SIGKILL'));
      const http = (JSON.parse(await s.waitForLine(/"transport":"http"/)) as { port: number }).port;
      return { ...s, base: `http://127.0.0.1:${http}` };
    };
    const s = await spawnIt();
    const c = await open(s.port);
    const friends = Array.from({ length: 20 }, (_, i) => `killf${i}`);
    for (const u of ['killa', 'killi', ...friends]) expect(await c.ask('register', u, PW)).toBe('ok');
    const inbox = await open(s.port);
    expect(await inbox.ask('sync')).toBe('ok');
    expect(await inbox.ask('login', 'killi', PW)).toBe('ok');
    expect(await inbox.ask('resume', '', '0')).toMatch(/^resumed,/);
    inbox.close();
    const token = (await api(s.base, 'POST', '/api/login', { user: 'killi', password: PW })).json.token as string;
    expect(await api(s.base, 'POST', '/api/rooms/killhttp/join', undefined, token)).toMatchObject({ status: 204 });
    const a = await open(s.port);
    expect(await a.ask('login', 'killa', PW)).toBe('ok');
    a.send('join', 'killroom');
    expect(await a.nextN(2)).toEqual(['room,killroom,joined,killa', 'ok']);

    // pipelined, with an HTTP post beside each: the kill comes right after the last acknowledgement
    const posted: number[] = [];
    for (let i = 0; i < 20; i++) {
      a.send('req', `s${i}`, 'say', 'killroom', `said${i}`);
      a.send('req', `j${i}`, 'join', `killjoin${i}`);
      a.send('req', `f${i}`, 'friend_request', friends[i]!);
      a.send('req', `i${i}`, 'send', 'killi', 'msg', `entry${i}`);
      a.send('req', `o${i}`, 'once', `killkey${i}`, 'send', 'killi', 'msg', `once${i}`);
      const post = await api(s.base, 'POST', '/api/rooms/killhttp/messages', { text: `post${i}` }, token);
      expect(post.status).toBe(201);
      posted.push(post.json.id as number);
    }
    // per round: the say and the join each with its push, three plain replies
    const replies = (await a.nextN(140, 20_000)).filter((f) => f.startsWith('req,'));
    expect(replies).toHaveLength(100);
    for (const r of replies) expect(r).toMatch(/^req,[sjfio]\d+,(said,killroom,\d+,\d+|ok)$/);
    s.proc.kill('SIGKILL');
    await s.exited;

    const t = await spawnIt();
    const b = await open(t.port);
    expect(await b.ask('login', 'killa', PW)).toBe('ok');
    const history = await b.ask('history', 'killroom', 'last', '50');
    expect(history.split(',').filter((f) => f.startsWith('said'))).toEqual(Array.from({ length: 20 }, (_, i) => `said${i}`));
    expect((await b.ask('rooms')).split(',').filter((r) => r.startsWith('killjoin'))).toHaveLength(20);
    for (const f of friends) {
      const fc = await open(t.port);
      expect(await fc.ask('sync')).toBe('ok'); // the request's stored push stays in the inbox: only the list is read here
      expect(await fc.ask('login', f, PW)).toBe('ok');
      expect(await fc.ask('friend_requests')).toBe('friend_requests,killa');
      fc.close();
    }
    const i2 = await open(t.port);
    expect(await i2.ask('sync')).toBe('ok');
    expect(await i2.ask('login', 'killi', PW)).toBe('ok');
    expect(await i2.ask('resume', '', '0')).toMatch(/^resumed,[A-Za-z0-9]+,40$/);
    const entries = (await i2.nextN(40)).map((f) => f.split(',').slice(2).join(','));
    expect(entries.filter((e) => e.includes('entry'))).toEqual(Array.from({ length: 20 }, (_, i) => `send,killa,msg,entry${i}`));
    expect(entries.filter((e) => e.includes(',once'))).toEqual(Array.from({ length: 20 }, (_, i) => `send,killa,msg,once${i}`));
    // a repeated once key is answered from what was recorded, not run again
    expect(await b.ask('once', 'killkey0', 'send', 'killi', 'msg', 'again')).toBe('ok');
    await expectNoMoreFrames(i2);
    const messages = await api(t.base, 'GET', '/api/rooms/killhttp/messages?last=50', undefined, token);
    expect((messages.json.messages as { id: number; text: string }[]).map((m) => [m.id, m.text])).toEqual(posted.map((id, i) => [id, `post${i}`]));
  });
});
