/**
 * dumbconsole on a (fake) terminal against real servers: logging in again
 * after a restart, replies on their own lines, quiet exits, help, hints and
 * readable history.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PassThrough } from 'node:stream';
import { removeDir, startServer, tempDir, type TestServer } from '../helpers/server.ts';
import { connect } from '../../src/client/client.ts';
import { parseToolFlags } from '../../tools/cli-common.ts';
import { runConsole } from '../../tools/dumbconsole.ts';
import { localTime } from '../../tools/console-view.ts';
import { inboxSupported } from '../client/inbox-support.ts';

const PW = 'password1';

/** What a terminal would show: enough of VT100 for readline's output (CR, LF, EL, ED, CHA, CUB, CUF, SGR). */
function screen(text: string): string[] {
  const lines: string[] = [];
  let line = '';
  let col = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '\x1b' && text[i + 1] === '[') {
      const m = /^\x1b\[(\d*)([A-Za-z])/.exec(text.slice(i))!;
      i += m[0].length - 1;
      const n = m[1] === '' ? undefined : Number(m[1]);
      if (m[2] === 'K') line = n === 2 ? '' : line.slice(0, col);
      else if (m[2] === 'J') line = line.slice(0, col);
      else if (m[2] === 'G') col = (n ?? 1) - 1;
      else if (m[2] === 'D') col = Math.max(0, col - (n ?? 1));
      else if (m[2] === 'C') col += n ?? 1;
    } else if (c === '\r') col = 0;
    else if (c === '\n') {
      lines.push(line);
      line = '';
      col = 0;
    } else {
      line = line.padEnd(col).slice(0, col) + c + line.slice(col + 1);
      col++;
    }
  }
  return [...lines, line];
}

type Console = {
  input: PassThrough;
  raw(): string;
  lines(): string[];
  type(keys: string): void;
  waitFor(what: string | RegExp): Promise<void>;
  done: Promise<number>;
};

function openConsole(port: number): Console {
  const input = new PassThrough();
  // a colour terminal: hints are drawn only in colour (the screen below drops the colour codes)
  const output = Object.assign(new PassThrough(), { columns: 200, isTTY: true });
  let text = '';
  const waiters: (() => void)[] = [];
  output.on('data', (d: Buffer) => {
    text += d.toString();
    for (const w of [...waiters]) w();
  });
  const done = runConsole(parseToolFlags(['--port', String(port)]), { input, output, env: {}, historyFile: undefined });
  const lines = () => screen(text);
  return {
    input,
    done,
    raw: () => text,
    lines,
    type: (keys) => void input.write(keys),
    waitFor(what) {
      const seen = () => (typeof what === 'string' ? text.includes(what) : lines().some((l) => what.test(l)));
      if (seen()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`console never showed ${String(what)}; screen:\n${lines().join('\n')}`)), 10_000);
        waiters.push(function check() {
          if (!seen()) return;
          clearTimeout(timer);
          waiters.splice(waiters.indexOf(check), 1);
          resolve();
        });
      });
    },
  };
}

const data = tempDir();
let srv: TestServer;
const hasInbox = await inboxSupported();

beforeAll(async () => {
  srv = await startServer([], data);
  const c = await connect({ port: srv.port });
  for (const u of ['con_a', 'con_b', 'con_c']) await c.call('register', u, PW);
  await c.close();
});

afterAll(async () => {
  await srv.stop();
  removeDir(data);
});

describe('dumbconsole', () => {
  it('logs in again after a server restart and says so, so pushes keep arriving; replies get their own lines; :quit is quiet', async () => {
    const port = srv.port;
    const con = openConsole(port);
    await con.waitFor(`127.0.0.1:${port}> `);
    con.type(`login,con_a,${PW}\r`);
    await con.waitFor(`127.0.0.1:${port} con_a> `);
    con.type('join,lobby\r');
    await con.waitFor(/^ok$/);
    await con.waitFor(/^127\.0\.0\.1:\d+ con_a> $/);
    // the push that comes before the reply does not leave the ok on a redrawn prompt
    expect(con.lines()).toContain('room,lobby,joined,con_a');
    expect(con.lines().filter((l) => /^127\.0\.0\.1:\d+( con_a)?> .+/.test(l))).toEqual([
      `127.0.0.1:${port}> login,con_a,${PW}`,
      `127.0.0.1:${port} con_a> join,lobby`,
    ]);

    await srv.stop();
    await con.waitFor('connection lost; reconnecting...');
    srv = await startServer(['--port', String(port)], data);
    await con.waitFor(`reconnected to 127.0.0.1:${port}; logged in again as con_a`);
    const b = await connect({ port });
    await b.login('con_b', PW);
    await b.call('send', 'con_a', 'msg', 'after the restart');
    await con.waitFor(/^send,con_b,msg,after the restart$/);
    await b.close();

    con.type(':quit\r');
    expect(await con.done).toBe(0);
    expect(con.raw().split('connection lost').length - 1).toBe(1);
  });

  it('leaves quietly on Ctrl-D and Ctrl-C', async () => {
    for (const key of ['\x04', '\x03']) {
      const con = openConsole(srv.port);
      await con.waitFor('> ');
      con.type(key);
      expect(await con.done).toBe(0);
      expect(con.raw()).not.toContain('connection lost');
    }
  });

  it('shows help from the server, hints the arguments still to come, and history with local times', async () => {
    const con = openConsole(srv.port);
    await con.waitFor('> ');
    con.type(`login,con_a,${PW}\r`);
    await con.waitFor(' con_a> ');
    con.type('help say\r');
    await con.waitFor(/^usage: say,<room>,<text>$/);
    await con.waitFor(/^reply: said,<room>,<id>,<time>$/);
    con.type('help\r');
    await con.waitFor(/^commands: .*\bhistory\b/);

    con.type('say,');
    await con.waitFor(/ con_a> say,<room>,<text>$/);
    con.type('hist_room,');
    await con.waitFor(/ con_a> say,hist_room,<text>$/);
    con.type('\x15'); // Ctrl-U: clear the line
    con.type('history,hist_room,');
    await con.waitFor(/history,hist_room,last\|since\|after\|before\|between$/);
    con.type('\x15');

    con.type('join,hist_room\r');
    con.type('say,hist_room,hello there\r');
    await con.waitFor(/^said,hist_room,/);
    con.type('history,hist_room,last,5\r');
    await con.waitFor('history of hist_room: 1 message');
    const line = con.lines().find((l) => l.includes('con_a: hello there'))!;
    const [, , id, time] = con
      .lines()
      .find((l) => l.startsWith('said,hist_room,'))!
      .split(',');
    expect(line).toBe(`  #${id} ${localTime(Number(time))} con_a: hello there`);
    con.type(':quit\r');
    expect(await con.done).toBe(0);
  });

  it.skipIf(!hasInbox)('shows inbox entries readably, and resumes from the last one shown after a server restart', async () => {
    const port = srv.port;
    const b = await connect({ port });
    await b.login('con_b', PW);
    await b.call('send', 'con_c', 'msg', 'hello, you');
    const con = openConsole(port);
    await con.waitFor('> ');
    con.type(`login,con_c,${PW}\r`);
    await con.waitFor(' con_c> ');
    con.type('send,con_b,msg,hi back\r');
    await con.waitFor(/^ok$/);
    con.type('sync\r');
    con.type('resume,,0\r');
    await con.waitFor(/^resumed: epoch [A-Za-z0-9]+, head #2$/);
    await con.waitFor(/^#1 con_b → you: hello, you$/);
    await con.waitFor(/^#2 you → con_b: hi back$/);

    await srv.stop();
    await con.waitFor('connection lost; reconnecting...');
    srv = await startServer(['--port', String(port)], data);
    await con.waitFor('logged in again as con_c');
    await con.waitFor('resuming the inbox after #2');
    await con.waitFor(/^resumed: epoch [A-Za-z0-9]+, head #2$/);
    const again = await connect({ port });
    await again.login('con_b', PW);
    await again.call('send', 'con_c', 'msg', 'after the restart');
    await con.waitFor(/^#3 con_b → you: after the restart$/);
    await again.close();
    await b.close();
    con.type(':quit\r');
    expect(await con.done).toBe(0);
    // nothing shown twice
    expect(con.lines().filter((l) => l.startsWith('#1 ') || l.startsWith('#2 '))).toHaveLength(2);
  });
});
