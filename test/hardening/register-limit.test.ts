/**
 * Accounts per client address (--register-limit-ip): account creation
 * needs no login, so nothing else bounded what one address stores (about
 * 300,000 accounts a day from one address, measured at 3.6 a second).
 */
import { describe, expect, it } from 'vitest';
import { errorOf, serverFixture } from '../helpers/users.ts';

const f = serverFixture(['--register-limit-ip', '3', '--http-port', '0']);
const name = (i: number) => `rl${process.pid % 10000}x${i}`;

describe('--register-limit-ip', () => {
  it('refuses accounts past the limit from one address with too_many_attempts, over TCP and HTTP; failed attempts do not count', async () => {
    const c = await f.open();
    expect(await c.ask('register', name(1), 'password1')).toBe('ok');
    // refused attempts give their place back
    expect(await c.ask('register', name(1), 'password1')).toMatch(errorOf('name_taken'));
    expect(await c.ask('register', name(2), 'short')).toMatch(errorOf('password_too_short'));
    expect(await c.ask('register', name(2), 'password1')).toBe('ok');
    // concurrent attempts reserve their places before hashing: one of these two gets the last one
    c.send('register', name(3), 'password1');
    c.send('register', name(4), 'password1');
    const both = [await c.next(), await c.next()];
    expect(both.filter((r) => r === 'ok')).toHaveLength(1);
    expect(both.filter((r) => errorOf('too_many_attempts').test(r))).toHaveLength(1);
    expect(await c.ask('register', name(5), 'password1')).toMatch(errorOf('too_many_attempts'));
    const http = await fetch(`http://127.0.0.1:${f.srv.server.httpPort}/api/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: name(6), password: 'password1' }),
    });
    expect(http.status).toBe(429);
    expect(((await http.json()) as { error: string }).error).toBe('too_many_attempts');
    // the accounts made still log in
    expect(await c.ask('login', name(2), 'password1')).toBe('ok');
  });
});
