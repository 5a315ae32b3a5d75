/**
 * The Session on a fake Link: one request at a time in arrival order,
 * pushes between replies, backpressure both ways, fatal errors and the
 * graceful drain. Commands are plain handlers on the real router.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommandError } from '../../src/core/errors.ts';
import type { Handler, Reply } from '../../src/core/module-api.ts';
import { buildRoutes } from '../../src/core/router.ts';
import { bytes } from '../helpers/fake-link.ts';
import { testCore, type TestCore } from '../helpers/core.ts';

let t: TestCore;
/** Resolvers of the `later` requests now running, oldest first. */
const later: ((reply: Reply) => void)[] = [];

const commands: Record<string, Handler> = {
  echo: (_c, args) => ['echo', ...args],
  later: () => new Promise<Reply>((resolve) => later.push(resolve)),
  big: (_c, [n]) => ['big', 'x'.repeat(Number(n))],
  push_first: (c) => {
    c.session.push(['note']);
    return ['pushed'];
  },
  boom: () => {
    throw new Error('a bug');
  },
  cut: () => {
    throw new CommandError('request_too_long'); // fatal in the catalogue
  },
  login_as: (c, [id, name]) => c.session.loginAs({ id: Number(id), name: name! }),
};

/** Lets promise callbacks (a settled request) run: a turn of the event loop, not a wait for time. */
const settle = () => new Promise((r) => setImmediate(r));

beforeAll(async () => {
  t = await testCore(['--max-outbound', '4096']);
  t.core.router.use(buildRoutes([{ commands, filters: {} }]));
});

afterAll(async () => {
  await t.close();
});

describe('session: order', () => {
  it('runs requests one at a time in arrival order and replies in that order', async () => {
    const { session, link } = t.open();
    session.receive(bytes('later'));
    session.receive(bytes('echo,a'));
    session.receive(bytes('later'));
    session.receive(bytes('echo,b'));
    expect(session.busy).toBe(true);
    expect(link.frames).toEqual([]); // echo,a waits behind the running request
    expect(later).toHaveLength(1);
    later.shift()!(['first']);
    await settle();
    expect(link.frames).toEqual(['first', 'echo,a']);
    expect(later).toHaveLength(1); // the second later started only now
    later.shift()!(undefined);
    await settle();
    expect(link.frames).toEqual(['first', 'echo,a', 'ok', 'echo,b']);
    expect(session.busy).toBe(false);
    session.close();
  });

  it('writes a push made by a request before its reply', () => {
    const { session, link } = t.open();
    session.receive(bytes('push_first'));
    expect(link.frames).toEqual(['note', 'pushed']);
    session.close();
  });

  it('answers a keepalive, bad UTF-8, unknown commands and faults without closing', () => {
    const { session, link } = t.open();
    session.receive(Buffer.alloc(0));
    session.receive(Buffer.from([0x6e, 0xff]));
    session.receive(bytes('nothing_here'));
    session.receive(bytes('boom'));
    session.receive(bytes('echo,a\\,b,c'), 0, 6); // a slice of a read: `echo,a`
    expect(link.frames).toEqual([
      '',
      'error,nonfatal,syntax,the payload is not valid UTF-8',
      'error,nonfatal,command_not_found,no command "nothing_here"',
      'error,nonfatal,unhandled,internal server error',
      'echo,a',
    ]);
    expect(session.open).toBe(true);
    session.close();
  });
});

describe('session: backpressure', () => {
  it('stops reading while requests queue behind a busy one, and reads again once they ran', async () => {
    const { session, link } = t.open();
    session.receive(bytes('later'));
    for (let i = 0; i < 256; i++) session.receive(bytes(`echo,${i}`));
    expect(link.reading).toEqual([false]);
    later.shift()!(undefined);
    // the queue runs at most 1024 requests a turn of the event loop, so others get their turns in between
    for (let turns = 0; turns < 4 && link.frames.length < 257; turns++) await settle();
    expect(link.reading).toEqual([false, true]);
    expect(link.frames).toHaveLength(257);
    expect(link.frames.at(-1)).toBe('echo,255');
    session.close();
  });

  it('runs at most 1024 requests of one connection per turn of the event loop; another connection runs its own meanwhile', async () => {
    const a = t.open();
    const b = t.open();
    // one read of many small pipelined requests (64 KiB of them is thousands)
    for (let i = 0; i < 3000; i++) a.session.receive(bytes(`echo,${i}`));
    expect(a.link.frames).toHaveLength(1024); // before: all 3000 at once, while every other client waited
    b.session.receive(bytes('echo,other'));
    expect(b.link.frames).toEqual(['echo,other']);
    for (let turns = 0; turns < 20 && a.link.frames.length < 3000; turns++) await settle();
    expect(a.link.frames).toHaveLength(3000);
    expect(a.link.frames.at(-1)).toBe('echo,2999');
    a.session.close();
    b.session.close();
  });

  it('runs no more requests while over half of --max-outbound (or a MiB) of replies is unread, until the link drains', () => {
    const { session, link } = t.open();
    link.holding = true;
    session.receive(bytes('big,3000')); // over half of the 4096 bound, under the bound itself
    session.receive(bytes('echo,after'));
    expect(link.frames).toHaveLength(1);
    expect(link.reading).toEqual([false]);
    link.take();
    expect(link.frames.at(-1)).toBe('echo,after');
    expect(link.reading).toEqual([false, true]);
    session.close();
  });

  it('cuts a connection whose pushes pass --max-outbound unsent bytes: slow_consumer', () => {
    const { session, link } = t.open();
    link.holding = true;
    const before = t.core.counters.slowConsumers;
    expect(session.push(['p', 'x'.repeat(2000)])).toBe(true);
    expect(session.push(['p', 'y'.repeat(2000)])).toBe(true);
    expect(session.push(['p', 'z'.repeat(2000)])).toBe(false);
    expect(link.frames.at(-1)).toBe('error,fatal,slow_consumer,4004');
    expect(link.closed).toBe('fatal');
    expect(t.core.counters.slowConsumers).toBe(before + 1);
    expect(session.push(['p'])).toBe(false);
    expect(link.frames).toHaveLength(3);
  });
});

describe('session: fatal, drain and close', () => {
  it('closes after a fatal error and runs nothing more', () => {
    const { session, link } = t.open();
    session.receive(bytes('cut'));
    session.receive(bytes('echo,late'));
    expect(link.frames).toEqual(['error,fatal,request_too_long,frame exceeds the maximum request size']);
    expect(link.closed).toBe('fatal');
    expect(session.open).toBe(false);
  });

  it('drain finishes the request in flight, drops the queued ones, then says shutdown', async () => {
    const { session, link } = t.open();
    session.receive(bytes('later'));
    session.receive(bytes('echo,queued'));
    session.drain();
    expect(link.closed).toBeUndefined();
    session.receive(bytes('echo,after-drain'));
    later.shift()!(['done']);
    await settle();
    expect(link.frames).toEqual(['done', 'error,fatal,shutdown,the server is stopping']);
    expect(link.closed).toBe('shutdown');
  });

  it('drain with nothing in flight says shutdown at once', () => {
    const { session, link } = t.open();
    session.drain();
    expect(link.frames).toEqual(['error,fatal,shutdown,the server is stopping']);
    expect(link.closed).toBe('shutdown');
  });

  it('logs in after the reply is written; close detaches from the hub and the registry', async () => {
    const user = await t.core.users.register('sessiontest', 'password1');
    const { session, link } = t.open();
    const live = t.core.sessions.size;
    session.receive(bytes(`login_as,${user.id},${user.name}`));
    expect(link.frames).toEqual(['ok']);
    expect(session.user).toEqual(user);
    expect(t.core.hub.sessionsOf(user.id)).toEqual([session]);
    session.close();
    session.close(); // idempotent
    expect(link.closed).toBe('normal');
    expect(t.core.hub.isOnline(user.id)).toBe(false);
    expect(t.core.sessions.size).toBe(live - 1);
  });
});
