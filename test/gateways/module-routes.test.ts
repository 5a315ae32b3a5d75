/** HTTP routes come from modules: a third-party module mounts one, and a reload adds it without a restart. */
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, removeDir, startServer, tempDir } from '../helpers/server.ts';
import { eventually } from '../helpers/eventually.ts';

const ROUTE_MODULE = `export default {
  routes: [{ method: 'GET', path: '/hello/:name', handler: (req, server) => ({ body: { hello: req.params.name, version: server.version } }) }],
};
`;

describe('module routes', () => {
  it('mounts a new module route on reload, on the running HTTP gateway', async () => {
    const dir = tempDir();
    const modules = join(dir, 'modules');
    mkdirSync(modules);
    symlinkSync(join(ROOT, 'src'), join(dir, 'src'));
    const names = readFileSync(join(ROOT, 'modules.txt'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    for (const f of readdirSync(join(ROOT, 'modules'))) symlinkSync(join(ROOT, 'modules', f), join(modules, f));
    const list = join(dir, 'modules.txt');
    writeFileSync(list, names.join('\n'));
    const srv = await startServer(['--http-port', '0', '--modules-dir', modules, '--modules-list', list], join(dir, 'data'));
    try {
      const base = `http://127.0.0.1:${srv.server.httpPort}`;
      expect((await fetch(`${base}/hello/world`)).status).toBe(404);
      writeFileSync(join(modules, 'hello.ts'), ROUTE_MODULE);
      writeFileSync(list, [...names, 'hello'].join('\n'));
      expect(await srv.server.reload()).toBe(true);
      // the gateway rebuilds its routes after the reload
      const res = await eventually(async () => {
        const r = await fetch(`${base}/hello/world`);
        expect(r.status).toBe(200);
        return r;
      });
      expect(await res.json()).toEqual({ hello: 'world', version: srv.server.core.api.version });
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
    } finally {
      await srv.stop();
      removeDir(dir);
    }
  });
});
