/** The client library against a real server. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { startServer, removeDir, tempDir, type TestServer } from '../helpers/server.ts';
import { connect, ConnectionClosedError, ReplyError } from '../../src/client/client.ts';
import { ClientProtocol } from '../../src/client/protocol.ts';

let srv: TestServer;
const PW = 'password1';

beforeAll(async () => {
  srv = await startServer();
  const c = await connect({ port: srv.port });
  for (const u of ['cl_a', 'cl_b']) await c.call('register', u, PW);
  await c.close();
});

afterAll(async () => {
  await srv.stop();
  removeDir(srv.data);
});

describe('client library', () => {
  it('pipelines calls and resolves them in order', async () => {
    const c = await connect({ port: srv.port });
    const replies = await Promise.all([c.call('nop'), c.call('whoami').catch((e: unknown) => e), c.call('login', 'cl_a', PW), c.call('whoami'), c.call('nop')]);
    expect(replies[0]).toEqual([]);
    expect(replies[1]).toBeInstanceOf(ReplyError);
    expect(replies.slice(2)).toEqual([['ok'], ['user', 'cl_a'], []]);
    await c.close();
  });

  it('types error tuples', async () => {
    const c = await connect({ port: srv.port });
    const err = (await c.call('register', 'cl_a', PW).catch((e: unknown) => e)) as ReplyError;
    expect(err).toBeInstanceOf(ReplyError);
    expect(err).toMatchObject({ type: 'name_taken', fatal: false });
    expect(err.info).not.toBe('');
    const wrapped = (await c.request('whoami').catch((e: unknown) => e)) as ReplyError;
    expect(wrapped).toMatchObject({ type: 'not_logged_in', fatal: false });
    await c.close();
  });

  it('matches request ids and separates pushes from replies under interleaving', async () => {
    const a = await connect({ port: srv.port });
    const b = await connect({ port: srv.port });
    await a.login('cl_a', PW);
    await b.login('cl_b', PW);
    const pushes: string[][] = [];
    b.on('push', (f) => pushes.push(f));
    const sends = Array.from({ length: 50 }, (_, i) => a.call('send', 'cl_b', 'msg', `n${i}`));
    const replies = await Promise.all(Array.from({ length: 50 }, (_, i) => (i % 2 ? b.request('whoami') : b.call('whoami'))));
    await Promise.all(sends);
    await b.request('nop');
    expect(replies.every((r) => r[0] === 'user' && r[1] === 'cl_b')).toBe(true);
    expect(pushes).toEqual(Array.from({ length: 50 }, (_, i) => ['send', 'cl_a', 'msg', `n${i}`]));
    await a.close();
    await b.close();
  });

  it('a push to itself comes as a push, then the reply', async () => {
    const a = await connect({ port: srv.port });
    await a.login('cl_a', PW);
    const pushes: string[][] = [];
    a.on('push', (f) => pushes.push(f));
    expect(await a.request('send', 'cl_a', 'note', 'x')).toEqual(['ok']);
    expect(pushes).toEqual([['send', 'cl_a', 'note', 'x']]);
    await a.close();
  });

  it('rejects every outstanding call when the connection closes, and later calls at once', async () => {
    const c = await connect({ port: srv.port });
    c.writeRaw(Buffer.from([0, 0, 0, 1, 7])); // a bad header: the server closes
    const pending = c.call('nop').catch((e: unknown) => e);
    const err = await pending;
    // the fatal error tuple may answer the call, or the close may reject it
    expect(err instanceof ReplyError || err instanceof ConnectionClosedError).toBe(true);
    await c.closed();
    await expect(c.call('nop')).rejects.toBeInstanceOf(ConnectionClosedError);
  });

  it('reconnects with backoff and logs in again when asked to', async () => {
    const c = await connect({ port: srv.port, reconnect: { initialDelayMs: 20 } });
    await c.login('cl_b', PW);
    const back = new Promise<void>((r) => c.once('reconnected', () => r()));
    for (const s of srv.server.core.sessions) if (s.user?.name === 'cl_b') s.close();
    await back;
    expect(await c.call('whoami')).toEqual(['user', 'cl_b']);
    await c.close();
  });
});

describe('reconnecting across a server restart', () => {
  it('logs in again with the remembered login, so pushes keep coming; a refused login is reported and forgotten', async () => {
    const data = tempDir();
    const empty = tempDir();
    let s = await startServer([], data);
    const port = s.port;
    try {
      const setup = await connect({ port });
      for (const u of ['rs_a', 'rs_b']) await setup.call('register', u, PW);
      await setup.close();
      const c = await connect({ port, reconnect: { initialDelayMs: 20, maxDelayMs: 200 } });
      expect(await c.callPayload(`login,rs_a,${PW}`)).toEqual(['ok']);
      c.rememberLogin(['login', 'rs_a', PW]);

      const back = once(c, 'reconnected');
      await s.stop();
      s = await startServer(['--port', String(port)], data);
      expect(await back).toEqual([undefined]);
      expect(await c.call('whoami')).toEqual(['user', 'rs_a']);
      const b = await connect({ port });
      await b.login('rs_b', PW);
      const pushed = once(c, 'push');
      await b.call('send', 'rs_a', 'msg', 'after the restart');
      expect(await pushed).toEqual([['send', 'rs_b', 'msg', 'after the restart']]);
      await b.close();

      // a server that no longer knows the account: the client says so and stays logged out
      const refused = once(c, 'reconnected');
      await s.stop();
      s = await startServer(['--port', String(port)], empty);
      const [err] = (await refused) as [ReplyError | undefined];
      expect(err).toMatchObject({ type: 'wrong_user_or_password' });
      await expect(c.call('whoami')).rejects.toMatchObject({ type: 'not_logged_in' });
      await c.close();
    } finally {
      await s.stop();
      removeDir(data);
      removeDir(empty);
    }
  });
});

describe('ClientProtocol matching rules', () => {
  it('treats a frame starting with the outstanding command name as its reply', async () => {
    const sent: string[] = [];
    const pushes: string[][] = [];
    const p = new ClientProtocol((s) => sent.push(s), { push: (f) => pushes.push(f), serverError: () => {} });
    const reply = p.call('presence', 'bob');
    p.receive('room,x,msg,1,2,u,hi');
    p.receive('presence,bob,online');
    expect(await reply).toEqual(['presence', 'bob', 'online']);
    expect(pushes).toEqual([['room', 'x', 'msg', '1', '2', 'u', 'hi']]);
    expect(sent).toEqual(['presence,bob']);
  });

  it('never takes a send push for the reply to an outstanding send', async () => {
    const pushes: string[][] = [];
    const p = new ClientProtocol(() => {}, { push: (f) => pushes.push(f), serverError: () => {} });
    const reply = p.call('send', 'me', 'x');
    p.receive('send,me,x');
    p.receive('ok');
    expect(await reply).toEqual(['ok']);
    expect(pushes).toEqual([['send', 'me', 'x']]);
  });

  it('reports an unsolicited error tuple as a server error', () => {
    const errors: ReplyError[] = [];
    const p = new ClientProtocol(() => {}, { push: () => {}, serverError: (e) => errors.push(e) });
    p.receive('error,fatal,timeout,idle');
    expect(errors[0]).toMatchObject({ type: 'timeout', fatal: true, info: 'idle' });
  });
});
