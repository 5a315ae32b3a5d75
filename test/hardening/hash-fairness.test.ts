/**
 * The argon2 queue is shared fairly between client addresses (README,
 * security table, "hashing floods"): one anonymous address flooding
 * registrations can fill only its share of `--hash-queue`, and another
 * address's login starts next, instead of behind the whole flood.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, startServer, type TestServer } from '../helpers/server.ts';
import { RawConnection } from '../helpers/raw.ts';
import { eventually } from '../helpers/eventually.ts';
import { PW } from '../helpers/users.ts';

let srv: TestServer;
const QUEUE = 64;

beforeAll(async () => {
  srv = await startServer(['--http-port', '0', '--hash-concurrency', '1', '--hash-queue', String(QUEUE), '--argon2-memory-kib', '16384', '--argon2-time', '3']);
});

afterAll(async () => {
  await srv.stop();
  removeDir(srv.data);
});

function openFrom(localAddress: string): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port: srv.port, host: '127.0.0.1', localAddress }, () => resolve(RawConnection.fromSocket(socket)));
    socket.once('error', reject);
  });
}

describe('a registration flood from one address', () => {
  it('holds at most an eighth of the hash queue, and a login from elsewhere runs next', async () => {
    const legit = await openFrom('127.0.0.2');
    expect(await legit.ask('register', 'legit', PW)).toBe('ok');

    // one HTTP connection pipelining 300 registrations: they all reach the hasher at once
    const flood = Array.from({ length: 300 }, (_, i) => {
      const body = JSON.stringify({ user: `flood${i}`, password: PW });
      return `POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    }).join('');
    const flooder = net.connect({ port: srv.server.httpPort!, host: '127.0.0.1' });
    flooder.on('error', () => {});
    let answers = '';
    flooder.setEncoding('latin1').on('data', (d: string) => (answers += d));
    flooder.write(flood);
    const hasher = srv.server.core.users.hasher;
    await eventually(() => expect(hasher.queueLength).toBe(QUEUE / 8), 10_000);

    expect(await legit.ask('login', 'legit', PW)).toBe('ok');
    // registrations answered by the time the login's reply came: the flood's hash running when the
    // login came, and one or two more while that reply was on its way (a hash takes tens of ms here);
    // before: queued behind the 64 the flood held (or refused too_many_attempts, the queue full).
    // Counted from the answers already read, not the store afterwards: a count taken later on a
    // loaded machine also counts hashes that finished after the login
    const answeredBeforeLogin = answers.split(/HTTP\/1\.1 2\d\d/).length - 1;
    expect(answeredBeforeLogin).toBeLessThanOrEqual(4);
    // the rest of the flood was refused as the address's share was full, not queued
    await eventually(() => expect(answers.split('HTTP/1.1 ').length - 1).toBe(300), 60_000, 50);
    expect(answers.split('HTTP/1.1 429').length - 1).toBeGreaterThanOrEqual(200);
    flooder.destroy();
    legit.close();
  }, 90_000);
});
