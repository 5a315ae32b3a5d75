/** Issue 11 items 2 and 8: login throttling under concurrency, the owner's own bucket, and the failed-login log. */
import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { removeDir, spawnServer, startServer, tempDir, type TestServer } from '../helpers/server.ts';
import { RawConnection } from '../helpers/raw.ts';
import { freshUsers, PW } from '../helpers/users.ts';

const servers: TestServer[] = [];
const cleanup: (() => void)[] = [];

async function server(args: string[]): Promise<TestServer> {
  const s = await startServer(args);
  servers.push(s);
  return s;
}

afterEach(async () => {
  for (const f of cleanup.splice(0)) f();
  for (const s of servers.splice(0)) {
    await s.stop();
    removeDir(s.data);
  }
});

/** A connection from another source address on the loopback network: another client address for the server. */
function openFrom(port: number, localAddress: string): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress }, () => {
      const c = RawConnection.fromSocket(socket);
      cleanup.push(() => c.close());
      resolve(c);
    });
    socket.once('error', reject);
  });
}

const ADDRESSES = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'];
const isType = (type: string) => (r: string) => new RegExp(`^error,nonfatal,${type}(,|$)`).test(r);

describe('login throttling under concurrency', () => {
  it('checks at most --login-fail-limit of a burst of guesses from several addresses; the right password in the burst is refused', async () => {
    // hashes slow enough, one at a time, that the whole burst is in before the first one fails
    const s = await server([
      '--login-fail-limit',
      '5',
      '--login-fail-limit-ip',
      '20',
      '--hash-concurrency',
      '1',
      '--argon2-memory-kib',
      '4096',
      '--argon2-time',
      '2',
    ]);
    const [u] = await freshUsers(s.port, 'burst');
    const conns = await Promise.all(ADDRESSES.flatMap((a) => Array.from({ length: 10 }, () => openFrom(s.port, a))));
    for (const [i, c] of conns.entries()) c.send('login', u!, `wrong-guess-${i}`);
    const owner = conns.at(-1)!;
    owner.send('login', u!, PW); // runs once that connection's guess is answered, within the burst
    const other = await openFrom(s.port, '127.0.0.9');
    expect(await other.ask('nop')).toBe('');
    const replies = await Promise.all(conns.map((c) => c.next(15_000)));
    const right = await owner.next(15_000);
    expect(replies.filter(isType('wrong_user_or_password'))).toHaveLength(5);
    expect(replies.filter(isType('too_many_attempts'))).toHaveLength(35);
    expect(right).toMatch(/^error,nonfatal,too_many_attempts/);
    expect(s.server.core.users.stats.loginFailures).toBe(5);
    expect(await other.ask('nop')).toBe('');
  });

  it('queues, not refuses, a burst of good logins from one address past the per-address limit', async () => {
    const s = await server(['--login-fail-limit-ip', '3', '--hash-concurrency', '1', '--argon2-memory-kib', '4096', '--argon2-time', '2']);
    const users = await freshUsers(s.port, ...Array.from({ length: 12 }, () => 'nat'));
    const conns = await Promise.all(users.map(() => openFrom(s.port, '127.0.0.2')));
    for (const [i, c] of conns.entries()) c.send('login', users[i]!, PW);
    expect(await Promise.all(conns.map((c) => c.next(15_000)))).toEqual(Array(12).fill('ok'));
  });
});

describe("the owner's address", () => {
  it('strangers locking a name out do not lock its owner out of the address it last logged in from', async () => {
    const s = await server(['--login-fail-limit', '3', '--login-fail-limit-ip', '100']);
    const [u] = await freshUsers(s.port, 'owner');
    const home = await openFrom(s.port, '127.0.0.2');
    expect(await home.ask('login', u!, PW)).toBe('ok');
    const attacker = await openFrom(s.port, '127.0.0.3');
    for (let i = 0; i < 3; i++) expect(await attacker.ask('login', u!, `guess-${i}`)).toMatch(/^error,nonfatal,wrong_user_or_password/);
    expect(await attacker.ask('login', u!, PW)).toMatch(/^error,nonfatal,too_many_attempts/);
    const elsewhere = await openFrom(s.port, '127.0.0.4');
    expect(await elsewhere.ask('login', u!, PW)).toMatch(/^error,nonfatal,too_many_attempts/);
    const back = await openFrom(s.port, '127.0.0.2');
    expect(await back.ask('login', u!, PW)).toBe('ok');
    // and guesses from the owner's address are limited all the same, in a bucket of their own
    for (let i = 0; i < 3; i++) expect(await back.ask('login', u!, `typo-${i}`)).toMatch(/^error,nonfatal,wrong_user_or_password/);
    expect(await back.ask('login', u!, PW)).toMatch(/^error,nonfatal,too_many_attempts/);
  });
});

describe('the failed-login log', () => {
  it('logs name and address at info, at most a line a second with a count of the others, never the password', async () => {
    const data = tempDir();
    const s = await spawnServer(['--data', data, '--log-level', 'info']);
    cleanup.push(
      () => s.proc.kill('SIGKILL'),
      () => removeDir(data),
    );
    const c = await RawConnection.open(s.port);
    cleanup.push(() => c.close());
    expect(await c.ask('register', 'logged_user', PW)).toBe('ok');
    for (let i = 0; i < 4; i++) expect(await c.ask('login', 'logged_user', `secret-guess-${i}`)).toMatch(/^error,nonfatal,wrong_user_or_password/);
    const first = JSON.parse(await s.waitForLine(/"msg":"login failed"/)) as Record<string, unknown>;
    expect(first).toMatchObject({ level: 30, user: 'logged_user', address: '127.0.0.1', reason: 'wrong_user_or_password' });
    const summary = JSON.parse(await s.waitForLine(/"suppressed":3\b/)) as Record<string, unknown>;
    expect(summary).toMatchObject({ level: 30, msg: 'login failed', suppressed: 3 });
    expect(s.lines.filter((l) => l.includes('"msg":"login failed"'))).toHaveLength(2);
    expect(s.lines.join('\n')).not.toContain('secret-guess');
  });
});
