/**
 * PROTOCOL.md read line by line as an outside tester would: the statements
 * protocol.test.ts and framing.test.ts leave out (escapes of any character,
 * what the server does not escape, empty fields, ordering behind a slow
 * command, the registered spelling of a sender, a mailbox that drains).
 */
import { describe, expect, it } from 'vitest';
import { encodeFrame } from '../../src/wire/frame-encoder.ts';
import { eventually } from '../helpers/eventually.ts';
import { removeDir, startServer, tempDir } from '../helpers/server.ts';
import { errorOf as err, expectNoMoreFrames, freshUsers, loggedIn, PW, serverFixture } from '../helpers/users.ts';

const fx = serverFixture(['--mailbox-size', '2']);

describe('section 1: the default limit', () => {
  it('a payload of exactly 1 MiB is served; a header announcing 1 MiB + 1 closes with request_too_long at once', async () => {
    const c = await fx.open();
    c.write(encodeFrame(`nop,${'x'.repeat(1024 * 1024 - 4)}`));
    expect(await c.next(10_000)).toBe('');
    const header = Buffer.alloc(5);
    header.writeUInt32BE(1024 * 1024 + 1);
    c.write(header); // no body follows: the answer must not wait for it
    expect(await c.next()).toMatch(/^error,fatal,request_too_long(,.*)?$/);
    await c.waitClosed();
  });
});

describe('section 2: text', () => {
  it('"any other escaped character stands for itself", in a command name and in arguments', async () => {
    const [a, b] = await fx.users('esc', 'escb');
    const s = await fx.loggedIn(a!);
    const r = await fx.loggedIn(b!);
    s.write('who\\ami');
    expect(await s.next()).toBe(`user,${a}`);
    s.write(`s\\end,${b},m\\x,\\q\\z,\\ \\é`);
    expect(await s.next()).toBe('ok');
    expect(await r.next()).toBe(`send,${a},mx,qz, é`);
  });

  it('\\, is a comma inside a field and \\\\ a backslash, also right before the end of the payload', async () => {
    const [a, b] = await fx.users('esc', 'escb');
    const s = await fx.loggedIn(a!);
    const r = await fx.loggedIn(b!);
    // the payload ends in an escaped backslash: not a trailing backslash, so no syntax error
    s.write(`send,${b},x,a\\,b,c\\\\`);
    expect(await s.next()).toBe('ok');
    expect(await r.next()).toBe(`send,${a},x,a\\,b,c\\\\`);
    // an escaped comma in a command name makes it one field: a command nobody has
    s.write('no\\,p');
    expect(await s.next()).toMatch(err('command_not_found'));
    // a lone backslash is a trailing backslash
    s.write('\\');
    expect(await s.next()).toMatch(err('syntax'));
    expect(await s.ask('nop')).toBe('');
  });

  it('the server escapes only \\ and , in what it sends: newlines, tabs, quotes and other text pass as they are', async () => {
    const [a, b] = await fx.users('raw', 'rawb');
    const s = await fx.loggedIn(a!);
    const r = await fx.loggedIn(b!);
    const text = 'line1\nline2\t"q" \'s\' ; : = % \r 😀 \u0000';
    expect(await s.ask('send', b!, 'msg', text)).toBe('ok');
    expect(await r.next()).toBe(`send,${a},msg,${text}`);
  });

  it('UTF-8 is checked strictly: surrogates, overlong forms, cut sequences and code points past U+10FFFF are nonfatal syntax errors', async () => {
    const c = await fx.open();
    for (const hex of ['6e6f70eda080', '6e6f70c080', '6e6f70e282', '6e6f70f4908080', 'e282ac2c6e6f70ff']) {
      c.write(encodeFrame(Buffer.from(hex, 'hex')));
      expect(await c.next(), hex).toMatch(err('syntax'));
    }
    // valid four-byte text is data, a byte order mark too (spaces are data, so is U+FEFF)
    c.write(encodeFrame(Buffer.from('nop,😀', 'utf8')));
    expect(await c.next()).toBe('');
    c.write(encodeFrame(Buffer.from('\uFEFFnop', 'utf8')));
    expect(await c.next()).toMatch(err('command_not_found'));
    expect(c.closed).toBe(false);
  });

  it('fields may be empty, anywhere after the command', async () => {
    const [a, b] = await fx.users('empty', 'emptyb');
    const s = await fx.loggedIn(a!);
    const r = await fx.loggedIn(b!);
    s.write(`send,${b},x,,,`);
    expect(await s.next()).toBe('ok');
    expect(await r.next()).toBe(`send,${a},x,,,`);
    s.write(`send,${b},x,,y,`);
    expect(await s.next()).toBe('ok');
    expect(await r.next()).toBe(`send,${a},x,,y,`);
    // nop takes anything, empty fields included
    s.write('nop,,,');
    expect(await s.next()).toBe('');
  });

  it('an empty command name is a command nobody has, not a crash', async () => {
    const c = await fx.open();
    c.write(',x');
    expect(await c.next()).toMatch(err('command_not_found'));
    c.write(',');
    expect(await c.next()).toMatch(err('command_not_found'));
    expect(await c.ask('nop')).toBe('');
  });
});

describe('section 3: one reply per request, in order', () => {
  it('pipelined behind a slow login (a password hash), whoami and send still answer in arrival order', async () => {
    const [a, b] = await fx.users('pipe', 'pipeb');
    const r = await fx.loggedIn(b!);
    const c = await fx.open();
    c.write(
      Buffer.concat([
        encodeFrame('whoami'),
        encodeFrame(`login,${a},${PW}`),
        encodeFrame('whoami'),
        encodeFrame(`send,${b},n,1`),
        encodeFrame(`login,${a},wrong-password`),
        encodeFrame(`send,${b},n,2`),
        encodeFrame('nop'),
      ]),
    );
    const replies = await c.nextN(7);
    expect(replies[0]).toMatch(err('not_logged_in'));
    expect(replies.slice(1, 4)).toEqual(['ok', `user,${a}`, 'ok']);
    expect(replies[4]).toMatch(err('wrong_user_or_password'));
    expect(replies.slice(5)).toEqual(['ok', '']);
    expect(await r.nextN(2)).toEqual([`send,${a},n,1`, `send,${a},n,2`]);
  });

  it('a req-wrapped send to yourself: the push comes before req,<id>,ok', async () => {
    const [a] = await fx.users('reqself');
    const c = await fx.loggedIn(a!);
    c.send('req', 'r1', 'send', a!, 'note', 'x');
    expect(await c.nextN(2)).toEqual([`send,${a},note,x`, 'req,r1,ok']);
  });

  it('every request gets exactly one reply: a burst of errors of every kind, one answer each', async () => {
    const c = await fx.open();
    const bad = [['nosuch'], ['whoami'], ['send', 'x', 'y'], ['login'], ['register', 'ab', PW], ['req'], ['req', '1'], ['nop']];
    for (const f of bad) c.send(...f);
    const replies = await c.nextN(bad.length);
    expect(replies.slice(0, 7).every((r) => r.startsWith('error,nonfatal,') || r.startsWith('req,1,error,nonfatal,'))).toBe(true);
    expect(replies[7]).toBe('');
    await expectNoMoreFrames(c);
  });
});

describe('section 3: lengths count characters, not bytes', () => {
  it('a password of 4 two-byte or 4 astral characters is too short; 8 astral characters are enough', async () => {
    const c = await fx.open();
    const name = `len${process.pid % 1000}${Date.now() % 10000}`;
    expect(await c.ask('register', name, 'éééé')).toMatch(err('password_too_short'));
    expect(await c.ask('register', name, '😀😀😀😀')).toMatch(err('password_too_short'));
    expect(await c.ask('register', name, '😀😀😀😀😀😀😀😀')).toBe('ok');
    expect(await c.ask('login', name, '😀😀😀😀😀😀😀😀')).toBe('ok');
  });

  it('a req id of 64 astral characters is accepted (128 UTF-16 units), 65 are not', async () => {
    const c = await fx.open();
    expect(await c.ask('req', '😀'.repeat(64), 'nop')).toBe(`req,${'😀'.repeat(64)}`);
    expect(await c.ask('req', '😀'.repeat(65), 'nop')).toMatch(err('syntax'));
  });
});

describe('section 3: user names are matched case-insensitively, and only A-Z fold', () => {
  it('a name with a character outside A-Z a-z 0-9 _ - never reaches an account, even one Unicode lowers to it', async () => {
    const [a] = await fx.users('kelvin');
    const b = a!.replace(/^k/, '\u212a'); // KELVIN SIGN: toLowerCase() makes it k
    const s = await fx.open();
    expect(await s.ask('login', b, PW)).toMatch(err('wrong_user_or_password'));
    expect(await s.ask('login', a!.toUpperCase(), PW)).toBe('ok');
    expect(await s.ask('send', b, 'x')).toMatch(err('user_not_found'));
    expect(await s.ask('presence', b)).toMatch(err('user_not_found'));
    expect(await s.ask('register', b, PW)).toMatch(err('invalid_name'));
  });
});

describe('section 3: send', () => {
  it("the sender's name in the pushed frame is spelled as registered, however the sender logged in", async () => {
    const [a, b] = await fx.users('MixedCase', 'plain');
    const s = await fx.loggedIn(a!.toLowerCase());
    const r = await fx.loggedIn(b!);
    expect(await s.ask('send', b!.toUpperCase(), 'hi')).toBe('ok');
    expect(await r.next()).toBe(`send,${a},hi`);
  });

  it('send answers user_not_found before anything is stored, and syntax for an empty user', async () => {
    const [a] = await fx.users('snf');
    const s = await fx.loggedIn(a!);
    expect(await s.ask('send', 'nobody-here', 'x')).toMatch(err('user_not_found'));
    expect(await s.ask('send', '', 'x')).toMatch(err('syntax'));
  });

  it('a mailbox that was full takes messages again once its stored messages were delivered', async () => {
    const [a, b] = await fx.users('full', 'fullb');
    const s = await fx.loggedIn(a!);
    for (const n of ['1', '2']) expect(await s.ask('send', b!, 'n', n)).toBe('ok');
    expect(await s.ask('send', b!, 'n', '3')).toMatch(err('mailbox_full'));
    const r = await fx.open();
    r.send('login', b!, PW);
    expect(await r.nextN(3)).toEqual(['ok', `send,${a},n,1`, `send,${a},n,2`]);
    // written to a connection, so deleted: room again (the mark may commit just after the write)
    r.close();
    await r.closedPromise;
    await eventually(async () => expect(await s.ask('send', b!, 'n', 'again')).toBe('ok'));
  });
});

describe('the defaults, as a client that read only the contracts sees them', () => {
  it('a mailbox holds 1000 messages: the 1001st send answers mailbox_full, nothing else on the way', async () => {
    const own = await startServer([], tempDir());
    try {
      const [a, b] = await freshUsers(own.port, 'dm', 'dmb');
      const s = await loggedIn(own.port, a!);
      for (let i = 1; i <= 1000; i++) s.send('send', b!, 'n', String(i));
      s.send('send', b!, 'n', 'overflow');
      const replies = await s.nextN(1001, 60_000);
      expect(replies.filter((r) => r !== 'ok').slice(0, 3)).toEqual([expect.stringMatching(err('mailbox_full'))]);
      expect(replies.at(-1)).toMatch(err('mailbox_full'));
      s.close();
    } finally {
      await own.stop();
      removeDir(own.data);
    }
  }, 90_000);
});
