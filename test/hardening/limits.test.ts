/** Issue 5 defences over real sockets: each one fails without its guard. */
import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { nodeArgs, removeDir, startServer, type TestServer } from '../helpers/server.ts';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
import { eventually } from '../helpers/eventually.ts';
import { RawConnection } from '../helpers/raw.ts';
import { freshUsers, loggedIn, PW } from '../helpers/users.ts';
import { makeCertificate } from '../helpers/tls.ts';
import { connect } from '../../src/client/client.ts';
import { encodeFrame } from '../../src/wire/frame-encoder.ts';

const servers: TestServer[] = [];
const closers: (() => void)[] = [];

async function server(args: string[], data?: string): Promise<TestServer> {
  const s = await startServer(args, data);
  servers.push(s);
  return s;
}

afterEach(async () => {
  for (const c of closers.splice(0)) c();
  for (const s of servers.splice(0)) {
    await s.stop();
    removeDir(s.data);
  }
});

const err = (fatality: string, type: string) => new RegExp(`^error,${fatality},${type}(,.*)?$`);

describe('login throttling', () => {
  it('refuses a name after --login-fail-limit failures, without hashing, until the window passes; success resets', async () => {
    const s = await server(['--login-fail-limit', '3', '--login-fail-window', '0.6', '--login-fail-limit-ip', '100']);
    const [u] = await freshUsers(s.port, 'thr');
    const c = await RawConnection.open(s.port);
    closers.push(() => c.close());
    expect(await c.ask('login', u!, 'wrong-1')).toMatch(err('nonfatal', 'wrong_user_or_password'));
    expect(await c.ask('login', u!, PW)).toBe('ok'); // resets the count
    for (let i = 0; i < 3; i++) expect(await c.ask('login', u!.toUpperCase(), 'wrong')).toMatch(err('nonfatal', 'wrong_user_or_password'));
    const started = performance.now();
    expect(await c.ask('login', u!, PW)).toMatch(err('nonfatal', 'too_many_attempts'));
    expect(performance.now() - started).toBeLessThan(20); // answered without hashing
    expect(s.server.core.users.stats.loginThrottled).toBe(1);
    await new Promise((r) => setTimeout(r, 650));
    expect(await c.ask('login', u!, PW)).toBe('ok');
  });

  it('refuses an address after --login-fail-limit-ip failures across names', async () => {
    const s = await server(['--login-fail-limit', '100', '--login-fail-limit-ip', '4']);
    const [u] = await freshUsers(s.port, 'ipthr');
    const c = await RawConnection.open(s.port);
    closers.push(() => c.close());
    for (let i = 0; i < 4; i++) expect(await c.ask('login', `nobody${i}`, 'x')).toMatch(err('nonfatal', 'wrong_user_or_password'));
    expect(await c.ask('login', u!, PW)).toMatch(err('nonfatal', 'too_many_attempts'));
  });
});

describe('password hashing', () => {
  it('answers too_many_attempts when the hash queue is full, and serves nop meanwhile', async () => {
    const s = await server(['--hash-concurrency', '1', '--hash-queue', '1', '--argon2-memory-kib', '32768', '--argon2-time', '3']);
    const conns = await Promise.all(Array.from({ length: 6 }, () => RawConnection.open(s.port)));
    for (const c of conns) closers.push(() => c.close());
    conns.forEach((c, i) => c.send('register', `queued${i}`, PW));
    const other = await RawConnection.open(s.port);
    closers.push(() => other.close());
    expect(await other.ask('nop')).toBe('');
    const replies = await Promise.all(conns.map((c) => c.next(10_000)));
    expect(replies.filter((r) => r === 'ok').length).toBe(2);
    expect(replies.filter((r) => /^error,nonfatal,too_many_attempts/.test(r)).length).toBe(4);
  });

  it('upgrades a hash made under other parameters at the next login', async () => {
    const first = await server(['--argon2-memory-kib', '256', '--argon2-time', '1']);
    const [u] = await freshUsers(first.port, 'upg');
    const data = first.data;
    const hashOf = async (s: TestServer) =>
      (await s.server.core.store.db.selectFrom('users').select('hash').where('name', '=', u!).executeTakeFirstOrThrow()).hash as string;
    expect(await hashOf(first)).toMatch(/^\$argon2id\$v=19\$m=256,p=1,t=1\$/);
    await first.stop();
    servers.splice(servers.indexOf(first), 1);
    const second = await server(['--argon2-memory-kib', '512', '--argon2-time', '2'], data);
    const c = await loggedIn(second.port, u!);
    c.close();
    await eventually(async () => expect(await hashOf(second)).toMatch(/^\$argon2id\$v=19\$m=512,p=1,t=2\$/));
    const again = await loggedIn(second.port, u!);
    again.close();
  });
});

describe('connection limits', () => {
  it('--max-connections-per-ip: the next connection from that address gets too_many_connections', async () => {
    const s = await server(['--max-connections-per-ip', '3']);
    const conns = await Promise.all([1, 2, 3].map(() => RawConnection.open(s.port)));
    for (const c of conns) closers.push(() => c.close());
    const extra = await RawConnection.open(s.port);
    expect(await extra.next()).toMatch(err('fatal', 'too_many_connections'));
    await extra.waitClosed();
    const other = await new Promise<RawConnection>((resolve) => {
      // another source address on the loopback network is another client
      const socket = net.connect({ port: s.port, host: '127.0.0.1', localAddress: '127.0.0.2' }, () => resolve(wrap(socket)));
    });
    closers.push(() => other.close());
    expect(await other.ask('nop')).toBe('');
    conns[0]!.close();
    await new Promise((r) => setTimeout(r, 50));
    const again = await RawConnection.open(s.port);
    closers.push(() => again.close());
    expect(await again.ask('nop')).toBe('');
  });

  it('--max-connections: the next connection gets too_many_connections', async () => {
    const s = await server(['--max-connections', '2']);
    const conns = await Promise.all([1, 2].map(() => RawConnection.open(s.port)));
    for (const c of conns) closers.push(() => c.close());
    const extra = await RawConnection.open(s.port);
    expect(await extra.next()).toMatch(err('fatal', 'too_many_connections'));
    await extra.waitClosed();
    expect(await conns[1]!.ask('nop')).toBe('');
  });
});

const wrap = (socket: net.Socket) => RawConnection.fromSocket(socket);

describe('slow consumers', () => {
  it('cuts a connection that does not read its pushes, while a fast receiver keeps receiving and the sender is not slowed', async () => {
    const s = await server(['--max-outbound', '65536']);
    const [sender, slow, fast] = await freshUsers(s.port, 'snd', 'slow', 'fast');
    const slowConn = await loggedIn(s.port, slow!);
    const fastClient = await connect({ port: s.port });
    await fastClient.login(fast!, PW);
    let fastGot = 0;
    fastClient.on('push', () => fastGot++);
    const client = await connect({ port: s.port });
    await client.login(sender!, PW);
    closers.push(
      () => void fastClient.close(),
      () => void client.close(),
    );
    slowConn.socket.pause(); // never reads
    const text = 'x'.repeat(16 * 1024);
    let sent = 0;
    const slowId = (await s.server.core.users.find(slow!))!.id;
    while (s.server.core.hub.isOnline(slowId) && sent < 5000) {
      await Promise.all([client.call('send', slow!, 'msg', text), client.call('send', fast!, 'msg', String(sent))]);
      sent++;
    }
    expect(s.server.core.hub.isOnline(slowId)).toBe(false);
    expect(s.server.core.counters.slowConsumers).toBe(1);
    // not slowed: the loop ended because the slow reader was cut, long before the cap (a sender held
    // behind it would stall until the test's timeout); no wall-clock bound, which a loaded machine breaks
    expect(sent).toBeLessThan(5000);
    await client.call('nop');
    expect(fastGot).toBe(sent);
    // what the slow user misses from now on is stored for their next login
    await client.call('send', slow!, 'msg', 'after the cut');
    slowConn.socket.resume();
    await slowConn.waitClosed(10_000);
    expect(slowConn.frames.at(-1)).toMatch(/^error,fatal,slow_consumer,\d+$/);
    const back = await RawConnection.open(s.port);
    closers.push(() => back.close());
    back.send('login', slow!, PW);
    // the push that found the bound passed was stored too, then the later one
    expect(await back.nextN(3)).toEqual(['ok', `send,${sender},msg,${text}`, `send,${sender},msg,after the cut`]);
  });

  it('drains a big mailbox as the client reads, and one cut short deletes exactly what was written', async () => {
    const s = await server(['--max-outbound', '65536', '--user-bytes', '0']); // the sender floods on purpose
    const [sender, slow] = await freshUsers(s.port, 'dsnd', 'dslow');
    const c = await loggedIn(s.port, sender!);
    closers.push(() => c.close());
    const text = 'z'.repeat(32 * 1024);
    const total = 400; // 12.8 MB stored: 200 times the outbound bound, more than the kernel's buffers hold
    for (let i = 0; i < total; i++) c.send('send', slow!, 'n', String(i), text);
    await c.nextN(total, 30_000);
    const numbers = (frames: string[]) => frames.filter((f) => f.startsWith('send,')).map((f) => Number(f.split(',')[3]));
    // 1. a client that stops reading mid-drain and leaves: not cut as a slow consumer, and
    //    everything written to it is gone from the mailbox, nothing else
    const first = await RawConnection.open(s.port);
    closers.push(() => first.close());
    first.send('login', slow!, PW);
    await first.next();
    first.socket.pause();
    await new Promise((r) => setTimeout(r, 300)); // the drain fills the socket and waits
    expect(s.server.core.counters.slowConsumers).toBe(0);
    first.socket.end(); // leaves; keeps reading what was already sent
    first.socket.resume();
    await first.waitClosed(10_000);
    const seen = numbers(first.frames);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.length).toBeLessThan(total);
    await new Promise((r) => setTimeout(r, 100)); // rows are deleted once their write settled
    // 2. the next login gets exactly the rest, in order, at full size, without a cut
    const second = await RawConnection.open(s.port);
    closers.push(() => second.close());
    second.send('login', slow!, PW);
    const frames = await second.waitFrames(1 + total - seen.length, 30_000);
    const again = numbers(frames);
    expect(again.filter((n) => seen.includes(n))).toEqual([]); // nothing repeated
    expect([...seen, ...again]).toEqual(Array.from({ length: total }, (_, i) => i)); // nothing lost, in order
    second.send('nop');
    expect((await second.waitFrames(frames.length + 1)).at(-1)).toBe('');
    expect(s.server.core.counters.slowConsumers).toBe(0);
  }, 60_000);

  it('stops reading from a client that does not read its replies', async () => {
    const s = await server([]);
    const [u] = await freshUsers(s.port, 'reader');
    const c = await loggedIn(s.port, u!);
    c.send('join', 'big');
    await c.nextN(2);
    const text = 'y'.repeat(4000);
    for (let i = 0; i < 100; i++) c.send('say', 'big', text);
    await c.nextN(200, 20_000);
    c.socket.pause();
    const request = encodeFrame('history,big,last,100'); // ~400 KB reply each
    for (let i = 0; i < 300; i++) c.write(request);
    await new Promise((r) => setTimeout(r, 500));
    const session = [...s.server.core.sessions].find((x) => x.user?.name === u)!;
    // 300 replies would be 120 MB; the server holds about its pause threshold plus one reply
    expect(session.link.pendingBytes()).toBeLessThan(4 * 1024 * 1024);
    c.socket.resume();
    const replies = await c.waitFrames(203 + 300, 30_000);
    expect(
      replies
        .slice(203)
        .map((r) => r.slice(0, 20))
        .filter((r) => !r.startsWith('history,big,100,')),
    ).toEqual([]);
    c.close();
  }, 60_000);
});

describe('TLS', () => {
  it('serves the same protocol over TLS to the client library', async () => {
    const { cert, key, dir } = makeCertificate();
    closers.push(() => removeDir(dir));
    const s = await server(['--tls-cert', cert, '--tls-key', key]);
    const c = await connect({ port: s.port, tls: { insecure: true } });
    expect(await c.call('register', 'tlsuser', PW)).toEqual(['ok']);
    await c.login('tlsuser', PW);
    expect(await c.request('whoami')).toEqual(['user', 'tlsuser']);
    await c.close();
    await expect(connect({ port: s.port, tls: true })).rejects.toThrow(/self-signed|certificate/i);
    const plain = await RawConnection.open(s.port);
    plain.write('nop');
    await plain.waitClosed();
    expect(plain.frames).toEqual([]);
    // the tools speak TLS too
    const [cmd, argv] = nodeArgs('tools/dumbclient.ts', ['--port', String(s.port), '--tls', '--insecure', 'nop', 'login,tlsuser,' + PW, 'whoami']);
    const { stdout: out } = await execFileAsync(cmd, argv, { encoding: 'utf8' }); // async: the server runs in this process
    expect(out.split('\n')).toEqual(['', 'ok', 'user,tlsuser', '']);
  });
});

describe('store failures', () => {
  it('answers unavailable (never ok) when the store cannot write, and keeps serving', async () => {
    const s = await server([]);
    const [from, to] = await freshUsers(s.port, 'sf', 'st');
    const c = await loggedIn(s.port, from!);
    closers.push(() => c.close());
    const store = s.server.core.store;
    const original = store.transaction.bind(store);
    // what each backend reports when its disk is full (SQLITE_FULL) or its server is gone (SQLSTATE 08006)
    const failure = store.dialect === 'sqlite' ? { code: 'ERR_SQLITE_ERROR', errcode: 13 } : { code: '08006' };
    store.transaction = () => Promise.reject(Object.assign(new Error('the store failed'), failure));
    expect(await c.ask('send', to!, 'msg', 'not stored')).toBe('error,nonfatal,unavailable,storage unavailable, try again'.replace(', try', '\\, try'));
    expect(await c.ask('nop')).toBe('');
    store.transaction = original;
    expect(await c.ask('send', to!, 'msg', 'stored')).toBe('ok');
    const r = await RawConnection.open(s.port);
    closers.push(() => r.close());
    r.send('login', to!, PW);
    expect(await r.nextN(2)).toEqual(['ok', `send,${from},msg,stored`]);
    await new Promise((res) => setTimeout(res, 100));
    expect(r.frames).toHaveLength(2); // the failed one was never acknowledged, and is not there
  });
});
