/**
 * The server's lifecycle under awkward timing: reloads that overlap, HTTP
 * routes during a reload, signals during a start that hangs, a module whose
 * setup fails after its init.
 */
import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, removeDir, spawnServerRaw, startServer, tempDir, type TestServer } from '../helpers/server.ts';

const API = JSON.stringify(join(ROOT, 'src/core/module-api.ts'));
const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const g = globalThis as Record<string, unknown>;

function modules(files: Record<string, string>, list: string[]): { dir: string; list: string; data: string } {
  const root = tempDir();
  cleanup.push(() => removeDir(root));
  const dir = join(root, 'modules');
  mkdirSync(dir, { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  writeFileSync(join(root, 'modules.txt'), list.join('\n'));
  return { dir, list: join(root, 'modules.txt'), data: join(root, 'data') };
}

async function start(m: { dir: string; list: string; data: string }, extra: string[] = []): Promise<TestServer> {
  const srv = await startServer(['--modules-dir', m.dir, '--modules-list', m.list, ...extra], m.data);
  cleanup.push(() => srv.stop());
  return srv;
}

/** A module whose setup takes a while (a slow store read, say) and counts how many run at once. */
const SLOW = (gen: number) => `import { defineModule } from ${API};
const g = globalThis;
export default defineModule({
  async setup() {
    g.slowNow = (g.slowNow ?? 0) + 1;
    g.slowMost = Math.max(g.slowMost ?? 0, g.slowNow);
    g.slowSetups = (g.slowSetups ?? 0) + 1;
    await new Promise((r) => setTimeout(r, 30));
    g.slowNow -= 1;
    return { commands: { slow: () => ['slow', '${gen}'] } };
  },
});
`;

/** A module with an HTTP route that tells its generation and whether its module was already disposed. */
const ROUTED = (gen: number, extraRoute = '') => `import { defineModule } from ${API};
export default defineModule({
  setup() {
    let disposed = false;
    return {
      routes: [{ method: 'GET', path: '/api/generation', handler: () => ({ body: { gen: ${gen}, disposed } }) }${extraRoute}],
      dispose() { disposed = true; },
    };
  },
});
`;

describe('reloads', () => {
  it('two reloads at once run one after the other: no module is set up twice or concurrently', async () => {
    g.slowNow = 0;
    g.slowMost = 0;
    g.slowSetups = 0;
    const m = modules({ 'slow.ts': SLOW(1) }, ['slow']);
    const srv = await start(m);
    expect(g.slowSetups).toBe(1);
    writeFileSync(join(m.dir, 'slow.ts'), SLOW(2));
    expect(await Promise.all([srv.server.reload(), srv.server.reload()])).toEqual([true, true]);
    expect(g.slowMost).toBe(1);
    // the second reload found generation 2 already in force, unchanged: it keeps it running
    expect(g.slowSetups).toBe(2);
  });

  it('swaps the HTTP routes with the module set: once a reload is done its routes answer, never a disposed module', async () => {
    const m = modules({ 'routed.ts': ROUTED(1) }, ['routed']);
    const srv = await start(m, ['--http-port', '0']);
    const url = `http://127.0.0.1:${srv.server.httpPort}/api/generation`;
    const get = async () => (await (await fetch(url)).json()) as { gen: number; disposed: boolean };
    expect(await get()).toEqual({ gen: 1, disposed: false });
    const seen: { gen: number; disposed: boolean }[] = [];
    let hammering = true;
    const hammer = Promise.all(
      Array.from({ length: 10 }, async () => {
        while (hammering) seen.push(await get());
      }),
    );
    for (let gen = 2; gen <= 5; gen++) {
      writeFileSync(join(m.dir, 'routed.ts'), ROUTED(gen));
      expect(await srv.server.reload()).toBe(true);
      expect(await get()).toEqual({ gen, disposed: false });
    }
    hammering = false;
    await hammer;
    expect(seen.filter((s) => s.disposed)).toEqual([]);
  });

  it('a reload whose routes the HTTP gateway cannot mount fails as a whole: the old modules and their routes stay', async () => {
    const m = modules({ 'routed.ts': ROUTED(1) }, ['routed']);
    const srv = await start(m, ['--http-port', '0']);
    const url = `http://127.0.0.1:${srv.server.httpPort}/api/generation`;
    writeFileSync(join(m.dir, 'routed.ts'), ROUTED(2, ", { method: 'GET', path: '/api/x*y', handler: () => ({}) }"));
    expect(await srv.server.reload()).toBe(false);
    expect(await (await fetch(url)).json()).toEqual({ gen: 1, disposed: false });
    writeFileSync(join(m.dir, 'routed.ts'), ROUTED(3));
    expect(await srv.server.reload()).toBe(true);
    expect(await (await fetch(url)).json()).toEqual({ gen: 3, disposed: false });
  });
});

describe('module setup failing after init', () => {
  it("disposes the module's resources", async () => {
    g.halfDisposed = 0;
    const half = `export default {
  init() { globalThis.halfTimer = setInterval(() => {}, 1000); },
  setup() { throw new Error('setup went wrong'); },
  dispose() { clearInterval(globalThis.halfTimer); globalThis.halfDisposed += 1; },
};
`;
    const m = modules({ 'half.ts': half }, ['half']);
    await expect(startServer(['--modules-dir', m.dir, '--modules-list', m.list], m.data)).rejects.toThrow(/module half: setup failed: setup went wrong/);
    expect(g.halfDisposed).toBe(1);
  });
});

/** A "database" that accepts connections and never answers: the server's start hangs opening its store. */
async function silentDatabase(): Promise<{ url: string; connected: Promise<void> }> {
  const sockets: net.Socket[] = [];
  let connected!: () => void;
  const first = new Promise<void>((r) => (connected = r));
  const server = net.createServer((s) => {
    sockets.push(s);
    s.on('error', () => {});
    connected();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.push(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return { url: `postgres://nobody@127.0.0.1:${(server.address() as net.AddressInfo).port}/none`, connected: first };
}

describe('signals during a start that hangs', () => {
  it('a SIGHUP does not kill the starting server; a second SIGTERM ends it at once', async () => {
    const db = await silentDatabase();
    const s = spawnServerRaw(['--port', '0', '--data', tempDir(), '--store', db.url]);
    cleanup.push(() => s.proc.kill('SIGKILL'));
    let signal: string | null = null;
    s.proc.on('exit', (_code, sig) => (signal = sig));
    await db.connected; // the signal handlers are in place before the store is opened
    s.proc.kill('SIGHUP');
    s.proc.kill('SIGTERM'); // waits for the start to finish...
    await s.waitForLine(/stop requested while starting/); // (two pending SIGTERMs would be one)
    s.proc.kill('SIGTERM'); // ...unless asked twice
    const code = await Promise.race([s.exited, new Promise((r) => setTimeout(() => r('still running'), 5000))]);
    expect({ code, signal }).toEqual({ code: 1, signal: null });
  });
});
