/**
 * The browser client's files (GATEWAYS.md section 5) over plain HTTP: the
 * page, its styles and modules with their types, and a clear 404 for a
 * file that does not exist (not "not built" when the client is built).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, startServer, type TestServer } from '../helpers/server.ts';
import { api } from '../helpers/ws.ts';

let srv: TestServer;
let base: string;

beforeAll(async () => {
  srv = await startServer(['--http-port', '0']);
  base = `http://127.0.0.1:${srv.server.httpPort}`;
});

afterAll(async () => {
  await srv.stop();
  removeDir(srv.data);
});

describe('the browser client files', () => {
  it('serves the page and its modules, and says a missing module does not exist', async () => {
    const page = await fetch(`${base}/`);
    expect([page.status, page.headers.get('content-type')]).toEqual([200, 'text/html; charset=utf-8']);
    const app = await fetch(`${base}/js/web/src/app.js`);
    expect([app.status, app.headers.get('content-type')]).toEqual([200, 'text/javascript; charset=utf-8']);
    const missing = await api(base, 'GET', '/js/web/src/no-such-module.js');
    expect(missing.status).toBe(404);
    expect(missing.json).toEqual({ error: 'command_not_found', info: 'no such file' });
  });
});
