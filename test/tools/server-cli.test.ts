/** `npm start` as people meet it: the line on stderr, --help, and exiting when nobody reads stdout any more. */
import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { FAST_HASH, ROOT, nodeArgs, removeDir, spawnServer, tempDir, type ChildServer } from '../helpers/server.ts';

const cleanup: (() => void)[] = [];

afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

function data(): string {
  const dir = tempDir();
  cleanup.push(() => removeDir(dir));
  return dir;
}

async function server(args: string[]): Promise<ChildServer> {
  const s = await spawnServer(args);
  cleanup.push(() => s.proc.kill('SIGKILL'));
  return s;
}

function run(args: string[]): Promise<{ code: number | null; stdout: string }> {
  const [cmd, argv] = nodeArgs('src/cli.ts', args);
  const proc = spawn(cmd, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  return new Promise((resolve) => proc.on('close', (code) => resolve({ code, stdout })));
}

describe('npm start', () => {
  it('tells people on stderr where it listens and where to point a browser; stdout stays JSON', async () => {
    const s = await server(['--data', data(), '--ws-port', '0']);
    const human = await s.waitForLine(/^textserver \S+ listening on /);
    const ws = (JSON.parse(await s.waitForLine(/"transport":"ws"/)) as { port: number }).port;
    expect(human).toBe(
      `textserver 1.0.0 listening on 127.0.0.1:${s.port} (TCP), 127.0.0.1:${ws} (WebSocket, HTTP); open http://127.0.0.1:${ws}/ in a browser. Logs are JSON lines on stdout; Ctrl-C stops.`,
    );
    // every other line is a pino JSON line
    for (const line of s.lines.filter((l) => l !== human)) expect(() => JSON.parse(line) as unknown).not.toThrow();
  });

  it('--help lists the flags of the listed modules as well as the core ones', async () => {
    const r = await run(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ {2}--max-request /m);
    expect(r.stdout).toMatch(/^ {2}--friends-only +\(friends\) /m);
    expect(r.stdout).toMatch(/^ {2}--typing-timeout +\(presence\) .*\(default 10\)$/m);
  });

  it('exits on SIGTERM even when the reader of its stdout has gone (npm start | tee, then Ctrl-C)', async () => {
    const [cmd, argv] = nodeArgs('src/cli.ts', ['--port', '0', '--data', data(), ...FAST_HASH]);
    const proc = spawn(cmd, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    cleanup.push(() => proc.kill('SIGKILL'));
    const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
    // the line for people comes once the signal handlers are in place (the JSON "listening"
    // line on stdout may come before them)
    await new Promise<void>((resolve) => createInterface({ input: proc.stderr }).on('line', (l) => l.includes(' listening on ') && resolve()));
    // the reading end goes away, as tee does on Ctrl-C: every later write to stdout fails with EPIPE
    proc.stdout.destroy();
    proc.kill('SIGTERM');
    // before the fix the process never exited (the test timeout fails it); the limit is 10 s
    expect(await exited).toBe(0);
  }, 15_000);
});
