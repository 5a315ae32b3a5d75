/**
 * The HTTP API while PostgreSQL is down: every route that needs the store
 * answers 503 unavailable (STORAGE.md section 3.5), none answers 500 or a
 * made-up result. SQLite cannot lose its reads, so this runs on PostgreSQL.
 */
import { afterEach, describe, expect, it } from 'vitest';
import pg from 'pg';
import { startServer, storeArgs, tempDir, removeDir, testPostgres } from '../helpers/server.ts';
import { eventually } from '../helpers/eventually.ts';
import { api } from '../helpers/ws.ts';
import { RawConnection } from '../helpers/raw.ts';
import { PW } from '../helpers/users.ts';
import { createDatabase, startPostgres } from '../../tools/postgres.ts';

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

describe.skipIf(testPostgres() === undefined)('HTTP API with the store down', () => {
  it('answers 503 unavailable on every route that needs the store, and works again once it is back', async () => {
    const cluster = await startPostgres();
    cleanup.push(() => cluster.stop());
    const srv = await startServer(['--store', await createDatabase(cluster.url, 'httpdown'), '--http-port', '0']);
    cleanup.push(() => srv.stop());
    const base = `http://127.0.0.1:${srv.server.httpPort}`;
    const c = await RawConnection.open(srv.port);
    cleanup.push(() => c.close());
    for (const u of ['downa', 'downb']) expect(await c.ask('register', u, PW)).toBe('ok');
    const token = (await api(base, 'POST', '/api/login', { user: 'downa', password: PW })).json.token as string;
    // downb was seen once, so a cached look-up of the name cannot hide a failing store
    expect(await api(base, 'GET', '/api/users/downb', undefined, token)).toMatchObject({ status: 200, json: { user: 'downb', online: false } });

    await cluster.kill();
    const unavailable = { status: 503, json: { error: 'unavailable' } };
    await eventually(async () => expect(await api(base, 'GET', '/api/users/downb', undefined, token)).toMatchObject(unavailable), 10_000);
    expect(await api(base, 'GET', '/api/me', undefined, token)).toMatchObject(unavailable);
    expect(await api(base, 'GET', '/api/rooms', undefined, token)).toMatchObject(unavailable);
    expect(await api(base, 'POST', '/api/logout', undefined, token)).toMatchObject(unavailable);

    await cluster.restart();
    await eventually(async () => expect(await api(base, 'GET', '/api/users/downb', undefined, token)).toMatchObject({ status: 200 }), 20_000, 100);
  }, 60_000);

  it('GET /api/users/:user does not answer a made-up last-seen time when reading it fails', async () => {
    const data = tempDir();
    cleanup.push(() => removeDir(data));
    const store = await storeArgs(data);
    const srv = await startServer([...store, '--http-port', '0'], data);
    cleanup.push(() => srv.stop());
    const base = `http://127.0.0.1:${srv.server.httpPort}`;
    const c = await RawConnection.open(srv.port);
    cleanup.push(() => c.close());
    for (const u of ['seena', 'seenb']) expect(await c.ask('register', u, PW)).toBe('ok');
    const token = (await api(base, 'POST', '/api/login', { user: 'seena', password: PW })).json.token as string;
    expect(await api(base, 'GET', '/api/users/seenb', undefined, token)).toMatchObject({ status: 200, json: { lastSeen: 0 } });
    // only the presence module's table fails: the token and the user are still found
    const db = new pg.Client({ connectionString: store[1] });
    await db.connect();
    await db.query('ALTER TABLE presence_last_seen RENAME TO presence_last_seen_gone');
    await db.end();
    const r = await api(base, 'GET', '/api/users/seenb', undefined, token);
    expect(r.status).toBe(500);
    expect(r.json).toMatchObject({ error: 'unhandled' });
  });
});
