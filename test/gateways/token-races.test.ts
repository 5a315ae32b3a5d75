/** GATEWAYS.md section 2: a logout racing a login with the same token leaves no connection logged in with it. */
import { describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import { api } from '../helpers/ws.ts';
import { PW, serverFixture } from '../helpers/users.ts';

const fx = serverFixture(['--http-port', '0', '--max-connections-per-ip', '1000']);

describe('token login racing its logout', () => {
  it('ends every login made with a token that was logged out, whichever came first', async () => {
    const RACES = 96;
    const base = `http://127.0.0.1:${fx.srv.server.httpPort}`;
    const [u] = await fx.users('tokrace');
    const conns = await Promise.all(Array.from({ length: RACES }, () => fx.open()));
    const tokens: string[] = [];
    const replies: string[] = [];
    for (const [i, c] of conns.entries()) {
      const t = (await api(base, 'POST', '/api/login', { user: u, password: PW })).json.token as string;
      tokens.push(t);
      const logout = api(base, 'POST', '/api/logout', undefined, t);
      // the login starts 0 to 5 timer turns (and a few loop turns) after the logout: some land while its delete commits
      for (let k = 0; k < i % 6; k++) await new Promise((r) => setTimeout(r, 0));
      for (let k = 0; k < Math.floor(i / 6) % 4; k++) await new Promise(setImmediate);
      c.send('token', t);
      expect((await logout).status).toBe(204);
      replies.push(await c.next());
    }
    for (const r of replies) expect(r).toMatch(/^(ok|error,nonfatal,wrong_user_or_password,.*)$/);
    // a login that won the race ends once the logout is through (the server may learn of it a moment later)
    await eventually(async () => {
      for (const c of conns) expect(await c.ask('whoami')).toMatch(/^error,nonfatal,not_logged_in/);
    }, 3000);
    // and the token is dead everywhere
    expect(await conns[0]!.ask('token', tokens[0]!)).toMatch(/^error,nonfatal,wrong_user_or_password/);
  });
});
