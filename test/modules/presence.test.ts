/** MODULES.md presence and info: online/offline once per change, last seen, typing with auto-stop. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, removeDir, type TestServer } from '../helpers/server.ts';
import { RawConnection } from '../helpers/raw.ts';
import { expectSilence, freshUsers, loggedIn as login } from '../helpers/users.ts';

let srv: TestServer;
const opened: RawConnection[] = [];
const loggedIn = (u: string) => login(srv.port, u, opened);
const users = (...p: string[]) => freshUsers(srv.port, ...p);
const err = (type: string) => new RegExp(`^error,nonfatal,${type}(,.*)?$`);
let roomNo = 0;

beforeAll(async () => {
  srv = await startServer(['--typing-timeout', '0.5']);
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
    await sb.closedPromise;
    await new Promise((r) => setTimeout(r, 100));
    const [, , state, seen] = (await sa.ask('presence', b!)).split(',');
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
    await sa3.closedPromise;
    await expectSilence(sf);
    await expectSilence(sm);
    await expectSilence(ss, 10);
    await expectSilence(sa2, 10);
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
    await sa2.next();
    expect(await sc.ask('typing', room, 'start')).toMatch(err('not_in_room'));
    expect(await sa.ask('typing', room, 'maybe')).toMatch(err('syntax'));
    expect(await sa.ask('typing', room)).toMatch(err('syntax'));
    expect(await sa.ask('typing', room, 'start')).toBe('ok');
    expect(await sb.next()).toBe(`room,${room},typing,${a},start`);
    expect(await sa.ask('typing', room, 'stop')).toBe('ok');
    expect(await sb.next()).toBe(`room,${room},typing,${a},stop`);
    await expectSilence(sa2, 10);
    await expectSilence(sc, 10);
  });

  it('stops by itself after the typing timeout', async () => {
    const [a, b] = await users('a', 'b');
    const sa = await loggedIn(a!);
    const sb = await loggedIn(b!);
    const room = await inRoom(sa, sb);
    const started = Date.now();
    expect(await sa.ask('typing', room, 'start')).toBe('ok');
    expect(await sb.next()).toBe(`room,${room},typing,${a},start`);
    expect(await sb.next(3000)).toBe(`room,${room},typing,${a},stop`);
    expect(Date.now() - started).toBeGreaterThanOrEqual(450);
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
  // a long timeout, so no automatic stop can arrive while the test runs
  let slow: TestServer;
  beforeAll(async () => {
    slow = await startServer(['--typing-timeout', '600']);
  });
  afterAll(async () => {
    await slow.stop();
    removeDir(slow.data);
  });

  it('a say ends the typing without a stop push, so the next start is pushed again', async () => {
    const [a, b] = await freshUsers(slow.port, 'a', 'b');
    const sa = await login(slow.port, a!, opened);
    const sb = await login(slow.port, b!, opened);
    const room = await inRoom(sa, sb);
    const other = await inRoom(sa, sb);
    expect(await sa.ask('typing', room, 'start')).toBe('ok');
    expect(await sb.next()).toBe(`room,${room},typing,${a},start`);
    expect(await sa.ask('typing', other, 'start')).toBe('ok');
    expect(await sb.next()).toBe(`room,${other},typing,${a},start`);
    sa.send('say', room, 'hello');
    const [said, pushed] = await sa.nextN(2);
    expect([said, pushed].some((f) => f!.startsWith(`said,${room},`))).toBe(true);
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
    await expectSilence(sb);
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
    expect(await c.ask('modules')).toBe('modules,nop,req,register,login,whoami,send,rooms,friends,presence,info,api,kfcr');
    expect(await c.ask('version', 'x')).toMatch(err('syntax'));
  });
});
