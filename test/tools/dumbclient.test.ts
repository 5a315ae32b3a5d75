/** dumbclient and dumbconsole spawned as processes against a real server. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { startServer, removeDir, nodeArgs, type TestServer } from '../helpers/server.ts';
import { connect } from '../../src/client/client.ts';
import { eventually } from '../helpers/eventually.ts';

let srv: TestServer;
const PW = 'password1';

beforeAll(async () => {
  srv = await startServer();
  const c = await connect({ port: srv.port });
  for (const u of ['tool_a', 'tool_b']) await c.call('register', u, PW);
  await c.close();
});

afterAll(async () => {
  await srv.stop();
  removeDir(srv.data);
});

type Run = { code: number | null; stdout: string; stderr: string };

function run(script: string, args: string[], stdin?: string): Promise<Run> {
  const [cmd, argv] = nodeArgs(script, args);
  const proc = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  proc.stdin.end(stdin ?? '');
  return new Promise((resolve) => proc.on('close', (code) => resolve({ code, stdout, stderr })));
}

const port = () => ['--port', String(srv.port)];

describe('dumbclient', () => {
  it('sends each argument as a request and prints each reply as on the wire', async () => {
    const r = await run('tools/dumbclient.ts', [...port(), 'nop', 'login,tool_a,' + PW, 'whoami', 'req,7,send,tool_a,x\\,y']);
    expect(r.stdout.split('\n')).toEqual(['', 'ok', 'user,tool_a', 'send,tool_a,x\\,y', 'req,7,ok', '']);
    expect(r.code).toBe(0);
  });

  it('exits 1 when a reply is an error tuple', async () => {
    const r = await run('tools/dumbclient.ts', [...port(), 'whoami', 'nop']);
    expect(r.stdout).toMatch(/^error,nonfatal,not_logged_in,.*\n\n$/);
    expect(r.code).toBe(1);
  });

  it('exits 2 with a one-line message when it cannot connect or the flags are wrong', async () => {
    const r = await run('tools/dumbclient.ts', ['--port', '1', 'nop']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    const u = await run('tools/dumbclient.ts', ['--bogus']);
    expect(u.code).toBe(2);
    expect(u.stderr).toMatch(/unknown flag --bogus/);
  });

  it('reads requests from stdin, one a line, and prints JSON with --json', async () => {
    const r = await run('tools/dumbclient.ts', [...port(), '--json'], `login,tool_b,${PW}\n\nwhoami\nreq,1,nop\n`);
    expect(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as unknown),
    ).toEqual([['ok'], ['user', 'tool_b'], ['req', '1']]);
    expect(r.code).toBe(0);
  });

  it('prints its usage with --help or -h and exits 0', async () => {
    const r = await run('tools/dumbclient.ts', ['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^usage: dumbclient /);
    expect(r.stdout).toContain('--wait SECONDS');
    const c = await run('tools/dumbconsole.ts', ['-h']);
    expect(c.code).toBe(0);
    expect(c.stdout).toMatch(/^usage: dumbconsole /);
  });

  it('says on stderr which requests were not sent after a fatal error', async () => {
    const small = await startServer(['--max-request', '64']);
    try {
      const r = await run('tools/dumbclient.ts', ['--port', String(small.port), 'nop', `nop,${'x'.repeat(100)}`, 'whoami']);
      expect(r.stdout).toMatch(/^\nerror,fatal,request_too_long/);
      // the close may be seen before whoami is written, or after
      expect(r.stderr).toMatch(/^dumbclient: the server closed the connection; not (sent|answered): "whoami"/);
      expect(r.code).toBe(1);
    } finally {
      await small.stop();
      removeDir(small.data);
    }
  });

  it('shows raw frames with --hex', async () => {
    const r = await run('tools/dumbclient.ts', [...port(), '--hex', 'nop']);
    expect(r.stdout.trim().split('\n')).toEqual(['> 00000003 00 6e6f70', '< 00000000 00']);
  });

  it('--wait catches a push sent by another client', async () => {
    const waiting = run('tools/dumbclient.ts', [...port(), '--wait', '3', `login,tool_b,${PW}`]);
    const sender = await connect({ port: srv.port });
    await sender.login('tool_a', PW);
    // wait until tool_b is online (the send would otherwise be stored)
    const b = (await srv.server.core.users.find('tool_b'))!.id;
    await eventually(() => expect(srv.server.core.hub.isOnline(b)).toBe(true), 10_000);
    await sender.call('send', 'tool_b', 'msg', 'hello there');
    await sender.close();
    const r = await waiting;
    expect(r.stdout.split('\n')).toEqual(['ok', 'send,tool_a,msg,hello there', '']);
    expect(r.code).toBe(0);
  });
});

describe('dumbconsole without a terminal', () => {
  it('runs stdin like dumbclient', async () => {
    const r = await run('tools/dumbconsole.ts', port(), `nop\nlogin,tool_a,${PW}\nwhoami\nnosuch\n`);
    expect(r.stdout.split('\n')).toEqual(['', 'ok', 'user,tool_a', expect.stringMatching(/^error,nonfatal,command_not_found/), '']);
    expect(r.code).toBe(1);
  });
});
