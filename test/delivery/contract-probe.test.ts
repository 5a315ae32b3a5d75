/**
 * DELIVERY.md tried from outside, edge by edge, where the other delivery
 * tests do not look: each test here is a place where the server once
 * disagreed with the document (or with what a chat client can rely on where
 * the document is silent), kept so it does not come back.
 */
import { describe, expect, it } from 'vitest';
import { api } from '../helpers/ws.ts';
import { PW, serverFixture } from '../helpers/users.ts';

const f = serverFixture(['--http-port', '0', '--user-rate', '0', '--user-bytes', '0']);
const base = () => `http://127.0.0.1:${f.srv.server.httpPort}`;
const token = async (user: string) => (await api(base(), 'POST', '/api/login', { user, password: PW })).json.token as string;

describe('HEAD /api/inbox', () => {
  // section 3: "Every entry written to any connection counts as received"; a HEAD writes no entry
  it('writes no entry, so it marks none received: a version 1 login still gets the stored message', async () => {
    const [to, from] = await f.users('hd', 'hdfrom');
    const d = await f.loggedIn(from!);
    expect(await d.ask('send', to!, 'kept')).toBe('ok');
    const t = await token(to!);
    const head = await fetch(`${base()}/api/inbox`, { method: 'HEAD', headers: { authorization: `Bearer ${t}` } });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
    const v1 = await f.open();
    v1.send('login', to!, PW);
    expect(await v1.nextN(2)).toEqual(['ok', `send,${from},kept`]);
  });
});
