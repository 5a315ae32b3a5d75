/**
 * STORAGE.md section 5: a full disk (SQLite under a file-size limit) and
 * PostgreSQL stopped and restarted under load. Nothing acknowledged is lost,
 * nothing is acknowledged that was not stored, the server stays up and
 * recovers.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ROOT, FAST_HASH, removeDir, spawnServer, startServer, tempDir, testPostgres } from '../helpers/server.ts';
import { RawConnection } from '../helpers/raw.ts';
import { eventually } from '../helpers/eventually.ts';
import { startPostgres, createDatabase } from '../../tools/postgres.ts';
import { createInterface } from 'node:readline';

const PW = 'password1';
const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** The server under `ulimit -f`: writes past `kib` KiB fail with EFBIG, as on a full disk. */
async function limitedServer(data: string, kib: number): Promise<{ port: number; kill(): void; lines: string[] }> {
  const cli = join(ROOT, 'src/cli.ts');
  const args = ['--disable-warning=ExperimentalWarning', cli, '--port', '0', '--data', data, ...FAST_HASH];
  const proc = spawn('bash', ['-c', `ulimit -f ${kib}; exec "$0" "$@"`, process.execPath, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  cleanup.push(() => proc.kill('SIGKILL'));
  const lines: string[] = [];
  createInterface({ input: proc.stderr! }).on('line', (l) => lines.push(l));
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).on('line', (l) => {
      lines.push(l);
      if (l.includes('"msg":"listening"')) resolve((JSON.parse(l) as { port: number }).port);
    });
    proc.once('exit', (code) => reject(new Error(`exited ${code}: ${lines.join('\n')}`)));
  });
  return { port, kill: () => proc.kill('SIGKILL'), lines };
}

async function register(port: number, ...names: string[]): Promise<void> {
  const c = await RawConnection.open(port);
  for (const n of names) expect(await c.ask('register', n, PW)).toBe('ok');
  c.close();
}

describe.skipIf(testPostgres() !== undefined)('a full disk (SQLite)', () => {
  it('answers unavailable, acknowledges nothing it did not store, keeps serving, and loses nothing acknowledged', async () => {
    const data = tempDir();
    cleanup.push(() => removeDir(data));
    const s = await limitedServer(data, 1024);
    await register(s.port, 'fulla', 'fullb');
    const a = await RawConnection.open(s.port);
    expect(await a.ask('login', 'fulla', PW)).toBe('ok');
    const text = 'z'.repeat(8 * 1024);
    const acked: number[] = [];
    let refused = 0;
    for (let i = 0; i < 400 && refused < 5; i++) {
      const reply = await a.ask('send', 'fullb', 'msg', `${i}`, text);
      if (reply === 'ok') acked.push(i);
      else {
        expect(reply).toMatch(/^error,nonfatal,unavailable,/);
        refused++;
      }
    }
    expect(refused).toBe(5);
    expect(acked.length).toBeGreaterThan(10);
    expect(await a.ask('nop')).toBe(''); // no write needed: still served
    expect(await a.ask('whoami')).toBe('user,fulla');
    a.close();
    s.kill();
    // the same data, room to write again
    const again = await spawnServer(['--data', data]);
    cleanup.push(() => again.proc.kill('SIGKILL'));
    const b = await RawConnection.open(again.port);
    b.send('login', 'fullb', PW);
    const frames = await b.nextN(1 + acked.length, 15_000);
    expect(frames[0]).toBe('ok');
    expect(frames.slice(1).map((f) => Number(f.split(',')[3]))).toEqual(acked);
    expect(await b.ask('nop')).toBe(''); // and nothing unacknowledged followed
    b.close();
  }, 60_000);
});

describe.skipIf(testPostgres() === undefined)('PostgreSQL stopped and restarted under load', () => {
  it('answers unavailable while it is down, recovers by itself, and loses nothing acknowledged', async () => {
    const cluster = await startPostgres();
    cleanup.push(() => cluster.stop());
    const url = await createDatabase(cluster.url, 'faults');
    const srv = await startServer(['--store', url, '--http-port', '0']);
    cleanup.push(() => srv.stop());
    const ready = async () => (await fetch(`http://127.0.0.1:${srv.server.httpPort}/readyz`)).status;
    await register(srv.port, 'pga', 'pgb');
    const a = await RawConnection.open(srv.port);
    cleanup.push(() => a.close());
    expect(await a.ask('login', 'pga', PW)).toBe('ok');
    const acked: number[] = [];
    const refusedIds: number[] = [];
    let i = 0;
    const send = async () => {
      const n = i++;
      const reply = await a.ask('send', 'pgb', 'msg', String(n));
      if (reply === 'ok') acked.push(n);
      else {
        expect(reply).toMatch(/^error,nonfatal,unavailable,/);
        refusedIds.push(n);
      }
    };
    for (let k = 0; k < 20; k++) await send();
    await cluster.kill();
    await eventually(async () => {
      await send();
      expect(refusedIds.length).toBeGreaterThan(0);
    }, 15_000);
    await eventually(async () => expect(await ready()).toBe(503), 5000);
    expect(await a.ask('nop')).toBe('');
    const back = cluster.restart();
    await eventually(
      async () => {
        const before = acked.length;
        await send();
        expect(acked.length).toBe(before + 1);
      },
      20_000,
      100,
    );
    await back;
    for (let k = 0; k < 20; k++) await send();
    await eventually(async () => expect(await ready()).toBe(200), 10_000);
    const b = await RawConnection.open(srv.port);
    cleanup.push(() => b.close());
    b.send('login', 'pgb', PW);
    await b.next(); // ok
    // every acknowledged send arrives, in order; a refused one may have committed before the connection died
    await eventually(() => expect(b.frames.length).toBeGreaterThanOrEqual(1 + acked.length), 10_000);
    const got = b.frames.slice(1).map((f) => Number(f.split(',')[3]));
    expect(got.filter((n) => acked.includes(n))).toEqual(acked);
    expect(got.every((n) => acked.includes(n) || refusedIds.includes(n))).toBe(true);
    expect(new Set(got).size).toBe(got.length);
  }, 90_000);
});
