/** MODULES.md presence and info: online/offline once per change, last seen, typing with auto-stop. */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startServer, removeDir, type TestServer } from '../helpers/server.ts';
import { RawConnection } from '../helpers/raw.ts';
import { expectNoMoreFrames, freshUsers, loggedIn as login } from '../helpers/users.ts';
import { eventually } from '../helpers/eventually.ts';

let srv: TestServer;
const opened: RawConnection[] = [];
const loggedIn = (u: string) => login(srv.port, u, opened);
const users = (...p: string[]) => freshUsers(srv.port, ...p);
const err = (type: string) => new RegExp(`^error,nonfatal,${type}(,.*)?$`);
let roomNo = 0;

/** Long, so no automatic stop arrives while a test runs; the test of the timeout moves the clock. */
const TYPING_TIMEOUT_S = 600;

beforeAll(async () => {
  srv = await startServer(['--typing-timeout', String(TYPING_TIMEOUT_S)]);
});

afterAll(async () => {
  for (const c of opened) c.close();
  await srv.stop();
  removeDir(srv.data);
});

async function inRoom(...sessions: RawConnection[]): Promise<string> {
  const room = `p-${++roomNo}`;
  for (let i = 0; i < sessions.length; i++) {
    sessions[i]!.send('join', room);
    await sessions[i]!.nextN(2);
    for (let j = 0; j < i; j++) await sessions[j]!.next();
  }
  return room;
}

async function befriend(a: string, sa: RawConnection, b: string, sb: RawConnection): Promise<void> {
  expect(await sa.ask('friend_request', b)).toBe('ok');
  await sb.next();
  sb.send('friend_accept', a);
  await sb.nextN(2);
  await sa.next();
}

describe('presence', () => {
  it('answers online, offline with last seen, or user_not_found', async () => {
    const [a, b] = await users('a', 'B');
    const sa = await loggedIn(a!);
    expect(await sa.ask('presence', b!.toLowerCase())).toBe(`presence,${b},offline,0`);
    expect(await sa.ask('presence', a!)).toBe(`presence,${a},online`);
    expect(await sa.ask('presence', 'nobody-here')).toMatch(err('user_not_found'));
    expect(await sa.ask('presence')).toMatch(err('syntax'));
    const sb = await loggedIn(b!);
    expect(await sa.ask('presence', b!)).toBe(`presence,${b},online`);
    const before = Date.now();
    sb.close();
    // offline once the server saw the close; last seen once its write committed
    const [, , state, seen] = await eventually(async () => {
      const reply = (await sa.ask('presence', b!)).split(',');
      expect(reply[2]).toBe('offline');
      expect(Number(reply[3])).toBeGreaterThan(0);
      return reply;
    });
    expect(state).toBe('offline');
    expect(Number(seen)).toBeGreaterThanOrEqual(before - 5);
    expect(Number(seen)).toBeLessThanOrEqual(Date.now());
    const anon = await RawConnection.open(srv.port);
    opened.push(anon);
    expect(await anon.ask('presence', a!)).toMatch(err('not_logged_in'));
  });

  it('friends and room co-members hear online/offline once per change, the user never', async () => {
    const [a, friend, mate, stranger] = await users('a', 'friend', 'mate', 'stranger');
    const sa1 = await loggedIn(a!);
    const sf = await loggedIn(friend!);
    const sm = await loggedIn(mate!);
    const ss = await loggedIn(stranger!);
    await befriend(a!, sa1, friend!, sf);
    await inRoom(sa1, sm);
    sa1.close();
    await sa1.closedPromise;
    expect(await sf.next()).toBe(`presence,${a},offline`);
    expect(await sm.next()).toBe(`presence,${a},offline`);
    const sa2 = await loggedIn(a!);
    expect(await sf.next()).toBe(`presence,${a},online`);
    expect(await sm.next()).toBe(`presence,${a},online`);
    const sa3 = await loggedIn(a!); // a second connection changes nothing
    sa3.close();
    const id = (await srv.server.core.users.find(a!))!.id;
    await eventually(() => expect(srv.server.core.hub.sessionsOf(id)).toHaveLength(1)); // the server saw the close
    // witnesses announced the same way: had sa3 announced anything, it would come before them
    sa2.close();
    expect(await sf.next()).toBe(`presence,${a},offline`);
    expect(await sm.next()).toBe(`presence,${a},offline`);
    const sa4 = await loggedIn(a!);
    expect(await sf.next()).toBe(`presence,${a},online`);
    expect(await sm.next()).toBe(`presence,${a},online`);
    await expectNoMoreFrames(sf);
    await expectNoMoreFrames(sm);
    await expectNoMoreFrames(ss);
    await expectNoMoreFrames(sa4);
  });
});

describe('typing', () => {
  it('pushes start and stop to the other members only; checks membership and syntax', async () => {
    const [a, b, c] = await users('a', 'b', 'c');
    const sa = await loggedIn(a!);
    const sa2 = await loggedIn(a!);
    const sb = await loggedIn(b!);
    const sc = await loggedIn(c!);
    const room = await inRoom(sa, sb);
    expect(await sa2.nextN(2)).toEqual([`room,${room},joined,${a}`, `room,${room},joined,${b}`]);
    expect(await sc.ask('typing', room, 'start')).toMatch(err('not_in_room'));
    expect(await sc.ask('typing', 'has space', 'start')).toMatch(err('invalid_room'));
    expect(await sa.ask('typing', room, 'maybe')).toMatch(err('syntax'));
    expect(await sa.ask('typing', room)).toMatch(err('syntax'));
    expect(await sa.ask('typing', room, 'start')).toBe('ok');
    expect(await sb.next()).toBe(`room,${room},typing,${a},start`);
    expect(await sa.ask('typing', room, 'stop')).toBe('ok');
    expect(await sb.next()).toBe(`room,${room},typing,${a},stop`);
    await expectNoMoreFrames(sa2);
    await expectNoMoreFrames(sc);
  });

  it('stops by itself after the typing timeout', async () => {
    const [a, b] = await users('a', 'b');
    const sa = await loggedIn(a!);
    const sb = await loggedIn(b!);
    const room = await inRoom(sa, sb);
    // the module's timer is set on vitest's clock: the test moves time instead of waiting
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      expect(await sa.ask('typing', room, 'start')).toBe('ok');
      expect(await sb.next()).toBe(`room,${room},typing,${a},start`);
      vi.advanceTimersByTime(TYPING_TIMEOUT_S * 1000 - 1);
      await expectNoMoreFrames(sb);
      vi.advanceTimersByTime(1);
      expect(await sb.next()).toBe(`room,${room},typing,${a},stop`);
    } finally {
      vi.useRealTimers();
    }
  });

  it("stops when the user's last connection closes", async () => {
    const [a, b] = await users('a', 'b');
    const sa = await loggedIn(a!);
    const sb = await loggedIn(b!);
    const room = await inRoom(sa, sb);
    expect(await sa.ask('typing', room, 'start')).toBe('ok');
    expect(await sb.next()).toBe(`room,${room},typing,${a},start`);
    sa.close();
    expect(await sb.nextN(2)).toEqual([`room,${room},typing,${a},stop`, `presence,${a},offline`]);
  });
});

describe('typing and say', () => {
  it('a say ends the typing without a stop push, so the next start is pushed again', async () => {
    const [a, b] = await users('a', 'b');
    const sa = await loggedIn(a!);
    const sb = await loggedIn(b!);
    const room = await inRoom(sa, sb);
    const other = await inRoom(sa, sb);
    expect(await sa.ask('typing', room, 'start')).toBe('ok');
    expect(await sb.next()).toBe(`room,${room},typing,${a},start`);
    expect(await sa.ask('typing', other, 'start')).toBe('ok');
    expect(await sb.next()).toBe(`room,${other},typing,${a},start`);
    sa.send('say', room, 'hello');
    const [pushed, said] = await sa.nextN(2);
    expect(pushed!.split(',').slice(0, 3)).toEqual(['room', room, 'msg']); // a request's push comes before its reply
    expect(said!.startsWith(`said,${room},`)).toBe(true);
    expect((await sb.next()).split(',').slice(0, 3)).toEqual(['room', room, 'msg']); // the message, and no stop
    expect(await sa.ask('typing', room, 'start')).toBe('ok');
    expect(await sb.next()).toBe(`room,${room},typing,${a},start`);
    // typing in the other room was not ended by the say: a repeated start there only renews
    expect(await sa.ask('typing', other, 'start')).toBe('ok');
    expect(await sa.ask('typing', room, 'stop')).toBe('ok');
    expect(await sb.next()).toBe(`room,${room},typing,${a},stop`);
    // a failed say (wrong arguments) ends nothing
    expect(await sa.ask('typing', room, 'start')).toBe('ok');
    expect(await sb.next()).toBe(`room,${room},typing,${a},start`);
    expect(await sa.ask('say', room)).toMatch(err('syntax'));
    expect(await sa.ask('typing', room, 'start')).toBe('ok');
    await expectNoMoreFrames(sb);
  });
});

describe('info', () => {
  it('answers version, commands and modules without a login', async () => {
    const c = await RawConnection.open(srv.port);
    opened.push(c);
    const { version } = (await import('../../package.json', { with: { type: 'json' } })).default;
    expect(await c.ask('version')).toBe(`version,${version},1`);
    const commands = (await c.ask('commands')).split(',');
    expect(commands[0]).toBe('commands');
    expect(commands.slice(1)).toEqual([...commands.slice(1)].sort());
    for (const name of ['nop', 'req', 'login', 'join', 'friend_request', 'typing', 'version']) expect(commands).toContain(name);
    expect(await c.ask('modules')).toBe('modules,nop,req,register,login,whoami,send,sync,resume,once,rooms,friends,presence,info,api,kfcr');
    expect(await c.ask('version', 'x')).toMatch(err('syntax'));
  });
});
