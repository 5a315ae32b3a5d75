/** PROTOCOL.md sections 2-4 over real sockets: every command, reply and error row. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, removeDir, type TestServer } from '../helpers/server.ts';
import { RawConnection } from '../helpers/raw.ts';
import { encodeFrame } from '../../src/wire/frame-encoder.ts';
import { InboxData } from '../../src/store/inbox-data.ts';
import { eventually } from '../helpers/eventually.ts';

let srv: TestServer;
const open: RawConnection[] = [];
const PW = 'password1';

async function conn(): Promise<RawConnection> {
  const c = await RawConnection.open(srv.port);
  open.push(c);
  return c;
}

let unique = 0;
/** Fresh accounts, so tests do not see each other's messages. */
async function fresh(...prefixes: string[]): Promise<string[]> {
  const c = await conn();
  const names: string[] = [];
  for (const p of prefixes) {
    const name = `${p}${++unique}`;
    expect(await c.ask('register', name, PW)).toBe('ok');
    names.push(name);
  }
  c.close();
  return names;
}

async function loggedIn(user: string): Promise<RawConnection> {
  const c = await conn();
  expect(await c.ask('login', user, PW)).toBe('ok');
  return c;
}

beforeAll(async () => {
  srv = await startServer(['--mailbox-size', '3']);
  const c = await conn();
  for (const u of ['alice', 'Bob', 'carol', 'dave', 'erin', 'frank']) expect(await c.ask('register', u, PW)).toBe('ok');
});

afterAll(async () => {
  for (const c of open) c.close();
  await srv.stop();
  removeDir(srv.data);
});

const err = (fatality: string, type: string) => new RegExp(`^error,${fatality},${type}(,.*)?$`, 's');

describe('nop and keepalive', () => {
  it('answers nop, nop with arguments and an empty frame with an empty frame', async () => {
    const c = await conn();
    expect(await c.ask('nop')).toBe('');
    expect(await c.ask('nop', 'a', 'b,c')).toBe('');
    c.write(encodeFrame(''));
    expect(await c.waitFrames(3)).toEqual(['', '', '']);
  });

  it('names are case-sensitive and spaces are data', async () => {
    const c = await conn();
    expect(await c.ask('NOP')).toMatch(err('nonfatal', 'command_not_found'));
    expect(await c.ask('nop ')).toMatch(err('nonfatal', 'command_not_found'));
    expect(await c.ask('nonsense', 'x')).toMatch(err('nonfatal', 'command_not_found'));
    expect(await c.ask('nop')).toBe('');
  });
});

describe('text syntax', () => {
  it('a trailing backslash is a nonfatal syntax error', async () => {
    const c = await conn();
    c.write('nop,x\\');
    expect(await c.next()).toMatch(err('nonfatal', 'syntax'));
    expect(await c.ask('nop')).toBe('');
  });

  it('invalid UTF-8 is a nonfatal syntax error and the connection goes on', async () => {
    const c = await conn();
    c.write(encodeFrame(Buffer.from([0x6e, 0x6f, 0x70, 0xff, 0xfe])));
    expect(await c.next()).toMatch(err('nonfatal', 'syntax'));
    expect(await c.ask('nop')).toBe('');
    expect(c.closed).toBe(false);
  });
});

describe('req', () => {
  it('wraps a reply, an empty reply and an error', async () => {
    const c = await conn();
    expect(await c.ask('req', '1', 'nop')).toBe('req,1');
    expect(await c.ask('req', 'x y', 'whoami')).toMatch(/^req,x y,error,nonfatal,not_logged_in(,.*)?$/);
    expect(await c.ask('req', '7', 'register', 'alice', PW)).toMatch(/^req,7,error,nonfatal,name_taken/);
    expect(await c.ask('req', 'q', 'nosuch')).toMatch(/^req,q,error,nonfatal,command_not_found/);
  });

  it('wraps a login ok and a multi-field reply', async () => {
    const c = await conn();
    expect(await c.ask('req', 'a', 'login', 'alice', PW)).toBe('req,a,ok');
    expect(await c.ask('req', 'b', 'whoami')).toBe('req,b,user,alice');
  });

  it('escapes the id on the way back', async () => {
    const c = await conn();
    expect(await c.ask('req', 'a,b\\c', 'nop')).toBe('req,a\\,b\\\\c');
  });

  it('answers an unwrapped syntax error for a missing, empty or over-long id', async () => {
    const c = await conn();
    expect(await c.ask('req')).toMatch(err('nonfatal', 'syntax'));
    expect(await c.ask('req', '')).toMatch(err('nonfatal', 'syntax'));
    expect(await c.ask('req', '', 'nop')).toMatch(err('nonfatal', 'syntax'));
    expect(await c.ask('req', 'x'.repeat(65), 'nop')).toMatch(err('nonfatal', 'syntax'));
    expect(await c.ask('req', 'x'.repeat(64), 'nop')).toBe(`req,${'x'.repeat(64)}`);
  });

  it('answers a wrapped syntax error when only the command is missing', async () => {
    const c = await conn();
    expect(await c.ask('req', '5')).toMatch(/^req,5,error,nonfatal,syntax(,.*)?$/);
    expect(await c.ask('req', '6', '')).toMatch(/^req,6,error,nonfatal,syntax(,.*)?$/);
  });

  it('does not nest: req inside req is a wrapped syntax error', async () => {
    const c = await conn();
    expect(await c.ask('req', '1', 'req', '2', 'nop')).toMatch(/^req,1,error,nonfatal,syntax(,.*)?$/);
  });
});

describe('register', () => {
  it('answers ok and leaves the connection as it was', async () => {
    const c = await conn();
    expect(await c.ask('register', 'newbie', PW)).toBe('ok');
    expect(await c.ask('whoami')).toMatch(err('nonfatal', 'not_logged_in'));
    expect(await c.ask('login', 'alice', PW)).toBe('ok');
    expect(await c.ask('register', 'newbie2', PW)).toBe('ok');
    expect(await c.ask('whoami')).toBe('user,alice');
  });

  it.each([
    [['register'], 'syntax'],
    [['register', 'someone'], 'syntax'],
    [['register', 'someone', PW, 'extra'], 'syntax'],
    [['register', 'ab', PW], 'name_too_short'],
    [['register', '', PW], 'name_too_short'],
    [['register', 'bad name', PW], 'invalid_name'],
    [['register', 'bad!', PW], 'invalid_name'],
    [['register', 'é-name', PW], 'invalid_name'],
    [['register', 'x'.repeat(33), PW], 'invalid_name'],
    [['register', 'ALICE', PW], 'name_taken'],
    [['register', 'bob', PW], 'name_taken'],
    [['register', 'someone', '1234567'], 'password_too_short'],
    [['register', 'someone', ''], 'password_too_short'],
  ])('%j answers %s', async (fields, type) => {
    const c = await conn();
    expect(await c.ask(...fields)).toMatch(err('nonfatal', type));
  });

  it('accepts the boundaries: 3 and 32 characters, an 8-character password, every allowed character', async () => {
    const c = await conn();
    expect(await c.ask('register', 'a_-', '12345678')).toBe('ok');
    expect(await c.ask('register', 'Z9'.repeat(16), '12345678')).toBe('ok');
    expect(await c.ask('register', 'AZaz09_-x', 'pass,word\\ é')).toBe('ok');
    expect(await c.ask('login', 'azaz09_-X', 'pass,word\\ é')).toBe('ok');
    expect(await c.ask('whoami')).toBe('user,AZaz09_-x');
  });
});

describe('login and whoami', () => {
  it('whoami needs a login', async () => {
    const c = await conn();
    expect(await c.ask('whoami')).toMatch(err('nonfatal', 'not_logged_in'));
  });

  it('matches names case-insensitively and shows the registered spelling', async () => {
    const c = await conn();
    expect(await c.ask('login', 'BOB', PW)).toBe('ok');
    expect(await c.ask('whoami')).toBe('user,Bob');
  });

  it('answers the same error for an unknown user and a wrong password', async () => {
    const c = await conn();
    const unknown = await c.ask('login', 'nobody', PW);
    const wrong = await c.ask('login', 'carol', 'wrong-password');
    expect(unknown).toMatch(err('nonfatal', 'wrong_user_or_password'));
    expect(wrong).toBe(unknown);
    expect(await c.ask('login')).toMatch(err('nonfatal', 'syntax'));
    expect(await c.ask('login', 'carol')).toMatch(err('nonfatal', 'syntax'));
    expect(await c.ask('login', 'carol', PW, 'x')).toMatch(err('nonfatal', 'syntax'));
  });

  it('switches a logged-in connection to another user', async () => {
    const c = await conn();
    expect(await c.ask('login', 'alice', PW)).toBe('ok');
    expect(await c.ask('login', 'carol', PW)).toBe('ok');
    expect(await c.ask('whoami')).toBe('user,carol');
    const other = await loggedIn('dave');
    expect(await other.ask('send', 'alice', 'ping')).toBe('ok'); // alice now offline: stored, not pushed here
    expect(await c.ask('nop')).toBe('');
    expect(c.frames.some((f) => f.startsWith('send,'))).toBe(false);
  });

  it('a failed login keeps the previous identity', async () => {
    const c = await loggedIn('carol');
    expect(await c.ask('login', 'alice', 'nope-nope')).toMatch(err('nonfatal', 'wrong_user_or_password'));
    expect(await c.ask('whoami')).toBe('user,carol');
  });
});

describe('send', () => {
  it('needs a login, a user and a command', async () => {
    const c = await conn();
    expect(await c.ask('send', 'alice', 'hi')).toMatch(err('nonfatal', 'not_logged_in'));
    const d = await loggedIn('dave');
    expect(await d.ask('send')).toMatch(err('nonfatal', 'syntax'));
    expect(await d.ask('send', 'alice')).toMatch(err('nonfatal', 'syntax'));
    expect(await d.ask('send', 'nobody', 'hi')).toMatch(err('nonfatal', 'user_not_found'));
  });

  it("delivers to every connection of the user with the sender's name", async () => {
    const [erin, frank] = await fresh('Erin', 'frank');
    const e1 = await loggedIn(erin!);
    const e2 = await loggedIn(erin!.toUpperCase());
    const f = await loggedIn(frank!);
    expect(await f.ask('send', erin!.toLowerCase(), 'msg', 'hello, world', 'back\\slash')).toBe('ok');
    const expected = `send,${frank},msg,hello\\, world,back\\\\slash`;
    expect(await e1.next()).toBe(expected);
    expect(await e2.next()).toBe(expected);
    expect(await f.ask('send', erin!, 'x', '')).toBe('ok');
    expect(await e1.next()).toBe(`send,${frank},x,`);
    expect(await e2.next()).toBe(`send,${frank},x,`);
  });

  it('a send to yourself reaches the requesting connection before the reply', async () => {
    const [me] = await fresh('self');
    const c = await loggedIn(me!);
    c.send('send', me!, 'note');
    expect(await c.nextN(2)).toEqual([`send,${me},note`, 'ok']);
  });

  it('stores for an offline user and delivers after the login ok, oldest first, once', async () => {
    const [from, to] = await fresh('from', 'to');
    const d = await loggedIn(from!);
    for (const text of ['one', 'two', 'three']) expect(await d.ask('send', to!, 'msg', text)).toBe('ok');
    const c1 = await conn();
    c1.send('login', to!, PW);
    expect(await c1.nextN(4)).toEqual(['ok', `send,${from},msg,one`, `send,${from},msg,two`, `send,${from},msg,three`]);
    // written, so received (once the mark commits)
    const id = (await srv.server.core.users.find(to!))!.id;
    const stored = new InboxData(srv.server.core.store);
    await eventually(async () => expect(await stored.pendingCount(id)).toBe(0));
    c1.close();
    await c1.closedPromise;
    const c2 = await conn();
    expect(await c2.ask('login', to!, PW)).toBe('ok');
    expect(await c2.ask('nop')).toBe('');
    expect(c2.frames).toEqual(['ok', '']);
  });

  it('answers mailbox_full past --mailbox-size', async () => {
    const [from, to] = await fresh('from', 'to');
    const d = await loggedIn(from!);
    for (let i = 0; i < 3; i++) expect(await d.ask('send', to!, 'n', String(i))).toBe('ok');
    expect(await d.ask('send', to!, 'n', 'overflow')).toMatch(err('nonfatal', 'mailbox_full'));
    const back = await conn();
    back.send('login', to!, PW);
    expect(await back.nextN(4)).toEqual(['ok', `send,${from},n,0`, `send,${from},n,1`, `send,${from},n,2`]);
  });
});
