/** The server as a process: flags, start-up failures, SIGHUP reload, graceful shutdown, durability after SIGKILL. */
import { afterEach, describe, expect, it } from 'vitest';
import { copyFileSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, removeDir, spawnServer, spawnServerRaw, tempDir, type ChildServer } from '../helpers/server.ts';
import { RawConnection } from '../helpers/raw.ts';
import { eventually } from '../helpers/eventually.ts';

const PW = 'password1';
const cleanup: (() => void)[] = [];

afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

function data(): string {
  const dir = tempDir();
  cleanup.push(() => removeDir(dir));
  return dir;
}

async function server(args: string[], env: Record<string, string> = {}): Promise<ChildServer> {
  const s = await spawnServer(args, env);
  cleanup.push(() => s.proc.kill('SIGKILL'));
  return s;
}

/** A modules directory of copies of the real modules, plus extra files. */
function modulesDir(extra: Record<string, string>, list: string[]): { dir: string; list: string } {
  const dir = join(data(), 'modules');
  mkdirSync(dir, { recursive: true });
  const listFile = join(dir, '..', 'modules.txt');
  for (const [name, text] of Object.entries(extra)) writeFileSync(join(dir, name), text);
  writeFileSync(listFile, list.join('\n') + '\n');
  return { dir, list: listFile };
}

const ECHO_MODULE = `export default { commands: { echo: (ctx, args) => ['echo', ...args] } };\n`;

describe('flags', () => {
  it.each([
    [['--port', 'abc']],
    [['--port', '70000']],
    [['--max-request', '-1']],
    [['--idle-timeout', '0']],
    [['--log-level', 'loud']],
    [['--no-such-flag', 'x']],
    [['stray']],
  ])('%j stops with a one-line message and exit code 2', async (args) => {
    const s = spawnServerRaw(['--data', data(), ...args]);
    expect(await s.exited).toBe(2);
    expect(s.lines.length).toBe(1);
    expect(s.lines[0]).toMatch(/^textserver: /);
  });

  it('reads TEXTSERVER_* variables, and flags win over them', async () => {
    const s = await server(['--data', data()], { TEXTSERVER_MAX_REQUEST: '10' });
    const c = await RawConnection.open(s.port);
    c.write(`nop,${'x'.repeat(20)}`);
    expect(await c.next()).toMatch(/^error,fatal,request_too_long/);
    const t = await server(['--data', data(), '--max-request', '100'], { TEXTSERVER_MAX_REQUEST: '10' });
    const d = await RawConnection.open(t.port);
    d.write(`nop,${'x'.repeat(20)}`);
    expect(await d.next()).toBe('');
    d.close();
  });

  it('logs one listening line with the real host and port', async () => {
    const s = await server(['--data', data(), '--host', '127.0.0.1']);
    const line = JSON.parse(s.lines.find((l) => l.includes('"msg":"listening"'))!) as Record<string, unknown>;
    expect(line).toMatchObject({ host: '127.0.0.1', port: s.port, level: 30 });
    expect(s.port).toBeGreaterThan(0);
  });
});

describe('modules at start', () => {
  it('refuses to start when a module fails to load, naming it', async () => {
    const m = modulesDir({ 'broken.ts': 'export default { commands: { x: 42 } };\n' }, ['broken']);
    const s = spawnServerRaw(['--data', data(), '--modules-dir', m.dir, '--modules-list', m.list]);
    expect(await s.exited).not.toBe(0);
    expect(s.lines.join('\n')).toMatch(/module broken/);
  });

  it('refuses to start when a listed module has no file, naming it', async () => {
    const m = modulesDir({}, ['ghost']);
    const s = spawnServerRaw(['--data', data(), '--modules-dir', m.dir, '--modules-list', m.list]);
    expect(await s.exited).not.toBe(0);
    expect(s.lines.join('\n')).toMatch(/module ghost/);
  });

  it('refuses a command defined twice, naming the module', async () => {
    const m = modulesDir({ 'one.ts': ECHO_MODULE, 'two.ts': ECHO_MODULE }, ['one', 'two']);
    const s = spawnServerRaw(['--data', data(), '--modules-dir', m.dir, '--modules-list', m.list]);
    expect(await s.exited).not.toBe(0);
    expect(s.lines.join('\n')).toMatch(/module two: command echo is already defined by module one/);
  });
});

describe('SIGHUP', () => {
  it('loads a module dropped into a modules directory without dropping connections; a failed reload keeps the old set', async () => {
    const names = ['nop', 'req', 'register', 'login', 'whoami', 'send'];
    const m = modulesDir({}, names);
    for (const n of names) copyFileSync(join(ROOT, 'modules', `${n}.ts`), join(m.dir, `${n}.ts`));
    // the copies import ../src/core/module-api.ts: point that at the real core
    symlinkSync(join(ROOT, 'src'), join(m.dir, '..', 'src'));
    const s = await server(['--data', data(), '--modules-dir', m.dir, '--modules-list', m.list]);
    const c = await RawConnection.open(s.port);
    expect(await c.ask('echo', 'hi')).toMatch(/^error,nonfatal,command_not_found/);

    writeFileSync(join(m.dir, 'echo.ts'), ECHO_MODULE);
    writeFileSync(m.list, [...names, 'echo'].join('\n'));
    s.proc.kill('SIGHUP');
    await s.waitForLine(/modules reloaded/);
    expect(await c.ask('echo', 'hi', 'there')).toBe('echo,hi,there');
    expect(await c.ask('register', 'reloaded', PW)).toBe('ok');

    writeFileSync(m.list, [...names, 'echo', 'does-not-exist'].join('\n'));
    s.proc.kill('SIGHUP');
    expect(await s.waitForLine(/module reload failed/)).toContain('does-not-exist');
    writeFileSync(join(m.dir, 'echo.ts'), 'export default { commands: { echo: 1 } };\n');
    writeFileSync(m.list, [...names, 'echo'].join('\n'));
    s.proc.kill('SIGHUP');
    const failures = () => s.lines.filter((l) => l.includes('module reload failed'));
    await eventually(() => expect(failures()).toHaveLength(2));
    expect(failures()[1]).toContain('module echo');
    expect(await c.ask('echo', 'still')).toBe('echo,still');
    expect(await c.ask('nop')).toBe('');
    expect(c.closed).toBe(false);
    c.close();
  });
});

describe('graceful shutdown', () => {
  it('sends error,fatal,shutdown to every connection and exits 0', async () => {
    const s = await server(['--data', data()]);
    const a = await RawConnection.open(s.port);
    const b = await RawConnection.open(s.port);
    expect(await a.ask('nop')).toBe('');
    s.proc.kill('SIGTERM');
    expect(await a.next()).toMatch(/^error,fatal,shutdown(,.*)?$/);
    expect(await b.next()).toMatch(/^error,fatal,shutdown(,.*)?$/);
    await a.waitClosed();
    expect(await s.exited).toBe(0);
  });

  it('finishes the request in flight before closing', async () => {
    // a slow hash keeps the register in flight when SIGINT arrives
    const s = await server(['--data', data(), '--http-port', '0', '--argon2-memory-kib', '65536', '--argon2-time', '3']);
    const metrics = `http://127.0.0.1:${(JSON.parse(await s.waitForLine(/"transport":"http"/)) as { port: number }).port}/metrics`;
    const a = await RawConnection.open(s.port);
    a.send('register', 'inflight', PW);
    // the server has read the request (and started it) once it counted the frame
    await eventually(async () => expect(await (await fetch(metrics)).text()).toMatch(/^textserver_frames_total\{direction="in"\} 1$/m));
    s.proc.kill('SIGINT');
    expect(await a.nextN(2, 10_000)).toEqual(['ok', expect.stringMatching(/^error,fatal,shutdown/)]);
    expect(await s.exited).toBe(0);
  });
});

describe('durability', () => {
  it('keeps an account that register acknowledged, through SIGKILL', async () => {
    const dir = data();
    const s = await server(['--data', dir]);
    const c = await RawConnection.open(s.port);
    expect(await c.ask('register', 'durable', PW)).toBe('ok');
    s.proc.kill('SIGKILL');
    await s.exited;
    const t = await server(['--data', dir]);
    const d = await RawConnection.open(t.port);
    expect(await d.ask('login', 'durable', PW)).toBe('ok');
    d.close();
  });

  it('keeps an offline message that send acknowledged, through SIGKILL', async () => {
    const dir = data();
    const s = await server(['--data', dir]);
    const c = await RawConnection.open(s.port);
    expect(await c.ask('register', 'sender', PW)).toBe('ok');
    expect(await c.ask('register', 'receiver', PW)).toBe('ok');
    expect(await c.ask('login', 'sender', PW)).toBe('ok');
    expect(await c.ask('send', 'receiver', 'msg', 'kept')).toBe('ok');
    s.proc.kill('SIGKILL');
    await s.exited;
    const t = await server(['--data', dir]);
    const d = await RawConnection.open(t.port);
    d.send('login', 'receiver', PW);
    expect(await d.nextN(2)).toEqual(['ok', 'send,sender,msg,kept']);
    d.close();
  });

  it('never writes a password or hash to the log', async () => {
    const s = await server(['--data', data(), '--log-level', 'trace']);
    const c = await RawConnection.open(s.port);
    const secret = 'Sup3rSecretPw';
    expect(await c.ask('register', 'logcheck', secret)).toBe('ok');
    expect(await c.ask('login', 'logcheck', secret)).toBe('ok');
    expect(await c.ask('login', 'logcheck', `${secret}x`)).toMatch(/wrong_user_or_password/);
    c.close();
    s.proc.kill('SIGTERM');
    await s.exited;
    const log = s.lines.join('\n');
    expect(log).toContain('logcheck');
    expect(log).not.toContain(secret);
    expect(log).not.toContain('$argon2');
  });
});
