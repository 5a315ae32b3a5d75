/**
 * What an operator sees when the store cannot be used at start (README "How
 * data is stored", STORAGE.md section 2): one line on stderr, exit code 2, no
 * password anywhere; and the SQLite store held by one process only.
 * SQLite cases run in the `sqlite` project, PostgreSQL ones in `postgres`.
 */
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { createDatabase, startPostgres, type Postgres } from '../../tools/postgres.ts';
import { RawConnection } from '../helpers/raw.ts';
import { FAST_HASH, removeDir, spawnServer, spawnServerRaw, startServer, tempDir, testPostgres, type ChildServer } from '../helpers/server.ts';

const base = testPostgres();
const cleanup: (() => unknown)[] = [];

afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function data(): string {
  const dir = tempDir();
  cleanup.push(() => removeDir(dir));
  return dir;
}

/** Starts a server that must not start: its exit code and everything it wrote. */
async function refused(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; lines: string[] }> {
  const s = spawnServerRaw(['--port', '0', ...args], env);
  cleanup.push(() => s.proc.kill('SIGKILL'));
  return { code: await s.exited, lines: s.lines };
}

async function started(args: string[], env: Record<string, string> = {}): Promise<ChildServer> {
  const s = await spawnServer(args, env);
  cleanup.push(() => s.proc.kill('SIGKILL'));
  return s;
}

describe.runIf(base === undefined)('a SQLite --data that cannot be used', () => {
  it.each([
    ['a file', (dir: string) => join(dir, 'file'), /^textserver: --data: .*file is not a directory$/],
    ['a path under a file', (dir: string) => join(dir, 'file', 'sub'), /^textserver: --data: cannot create .*sub: a part of the path is not a directory$/],
  ])('%s stops the server with one line and exit code 2', async (_, path, message) => {
    const dir = data();
    writeFileSync(join(dir, 'file'), 'not a directory');
    const r = await refused(['--data', path(dir)]);
    expect(r.code).toBe(2);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(message);
  });

  it('a textserver.db that is not a database stops it with one line and exit code 2', async () => {
    const dir = data();
    writeFileSync(join(dir, 'textserver.db'), 'x'.repeat(200));
    const r = await refused(['--data', dir]);
    expect(r.code).toBe(2);
    expect(r.lines).toEqual([`textserver: --data: cannot open ${join(dir, 'textserver.db')}: file is not a database`]);
  });

  it('a second server on the same --data is refused while the first serves on; a killed one leaves no lock', async () => {
    const dir = data();
    const first = await started(['--data', dir]);
    const second = await refused(['--data', dir]);
    expect(second.code).toBe(2);
    expect(second.lines).toEqual([`textserver: --data: ${dir} is in use by another textserver process (a SQLite store is one process's; give each server its own --data)`]);
    const c = await RawConnection.open(first.port);
    expect(await c.ask('register', 'still', 'password1')).toBe('ok');
    c.close();
    // the kernel drops the lock with the process: no stale lock after kill -9
    first.proc.kill('SIGKILL');
    await first.exited;
    const third = await started(['--data', dir]);
    const d = await RawConnection.open(third.port);
    expect(await d.ask('login', 'still', 'password1')).toBe('ok');
    d.close();
  });

  it('a store in --data is refused to a second one in the same process until the first is closed', async () => {
    const dir = data();
    const first = await startServer([], dir);
    await expect(startServer([], dir)).rejects.toThrow(/is in use by another textserver process/);
    await first.stop();
    const again = await startServer([], dir);
    await again.stop();
  });
});

describe('--store values that are not a store', () => {
  it('echo the value without its password', async () => {
    const r = await refused(['--data', data(), '--store', 'postgress://ts:hunter2@db.example/textserver']);
    expect(r.code).toBe(2);
    expect(r.lines).toEqual(['textserver: --store: "postgress://ts:***@db.example/textserver" is neither sqlite nor a postgres:// URL']);
  });

  it('hide a password typed with # or ? unencoded (the URL is then invalid) whole', async () => {
    for (const secret of ['hunter#2', 'hunter?2', 'a/b#c?d']) {
      const r = await refused(['--data', data(), '--store', `postgres://ts:${secret}@127.0.0.1:1/textserver`]);
      expect(r.code).toBe(2);
      expect(r.lines).toEqual(['textserver: cannot reach PostgreSQL at postgres://ts:***@127.0.0.1:1/textserver: Invalid URL']);
    }
  });
});

describe.runIf(base !== undefined)('a PostgreSQL --store that cannot be used', () => {
  const SECRET = 'p@ss/w:rd%x';
  const encoded = encodeURIComponent(SECRET);

  function at(path: string, password = `:${encoded}`, query = ''): string {
    const u = new URL(base!);
    return `postgres://postgres${password}@${u.host}/${path}${query}`;
  }

  async function admin<R>(fn: (c: pg.Client) => Promise<R>, db = 'postgres'): Promise<R> {
    const u = new URL(base!);
    u.pathname = `/${db}`;
    const c = new pg.Client({ connectionString: u.toString() });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  }

  it.each([
    ['a database that does not exist', () => at('no_such_db'), /database "no_such_db" does not exist/],
    ['the postgresql:// scheme, a password as a query parameter', () => at('no_such_db', '', `?sslmode=disable&password=${encoded}`).replace('postgres://', 'postgresql://'), /does not exist/],
    ['a port nobody listens on', () => `postgres://postgres:${encoded}@127.0.0.1:1/textserver`, /ECONNREFUSED/],
  ])('%s: one line, exit code 2, no password', async (_, url, reason) => {
    const r = await refused(['--data', data(), '--store', url()]);
    expect(r.code).toBe(2);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(/^textserver: cannot reach PostgreSQL at /);
    expect(r.lines[0]).toMatch(reason);
    for (const secret of [SECRET, encoded, 'p%40ss']) expect(r.lines[0]).not.toContain(secret);
  });

  it('the same from TEXTSERVER_STORE', async () => {
    const r = await refused(['--data', data()], { TEXTSERVER_STORE: at('no_such_db') });
    expect(r.code).toBe(2);
    expect(r.lines).toEqual([`textserver: cannot reach PostgreSQL at ${at('no_such_db', ':***')}: database "no_such_db" does not exist`]);
  });

  it('a role that may not create tables gets a line saying what to grant, exit code 2', async () => {
    const role = `nocreate_${process.pid}`;
    const url = await createDatabase(base!, `nocreate_${process.pid}`);
    await admin((c) => c.query(`CREATE ROLE ${role} LOGIN`));
    cleanup.push(() => admin((c) => c.query(`DROP OWNED BY ${role}; DROP ROLE ${role}`), new URL(url).pathname.slice(1)));
    const u = new URL(url);
    u.username = role;
    const r = await refused(['--data', data(), '--store', u.toString()]);
    expect(r.code).toBe(2);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(/^textserver: PostgreSQL: the role cannot create textserver's tables \(core schema\): permission denied for schema public; .*GRANT CREATE ON SCHEMA/);
  });

  it('a role that may only read and write an up-to-date schema starts and writes', async () => {
    const dir = data();
    const db = `dmlonly_${process.pid}`;
    const url = await createDatabase(base!, db);
    const owner = await startServer(['--store', url], dir); // the owner applies every migration
    await owner.stop();
    const role = `dml_${process.pid}`;
    await admin(
      (c) =>
        c.query(
          `CREATE ROLE ${role} LOGIN; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ${role}; GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO ${role}`,
        ),
      db,
    );
    cleanup.push(() => admin((c) => c.query(`DROP OWNED BY ${role}; DROP ROLE ${role}`), db));
    const u = new URL(url);
    u.username = role;
    const s = await started(['--data', dir, '--store', u.toString()]);
    const c = await RawConnection.open(s.port);
    expect(await c.ask('register', 'dml', 'password1')).toBe('ok');
    c.close();
  });

  it("a database holding another application's table of the same name: a line saying so, exit code 2; a schema of its own then works", async () => {
    const db = `shared_${process.pid}`;
    const url = await createDatabase(base!, db);
    await admin((c) => c.query(`CREATE TABLE users (id serial PRIMARY KEY, email text); INSERT INTO users (email) VALUES ('a@example.org')`), db);
    const r = await refused(['--data', data(), '--store', url]);
    expect(r.code).toBe(2);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(/^textserver: PostgreSQL: the database already holds a table or index textserver did not create \(core schema\): relation "users" already exists; .*search_path/);
    // what the line advises: a schema of textserver's own, named in the URL
    await admin((c) => c.query('CREATE SCHEMA chat'), db);
    const s = await started(['--data', data(), '--store', `${url}?options=${encodeURIComponent('-c search_path=chat')}`]);
    const c = await RawConnection.open(s.port);
    expect(await c.ask('register', 'beside', 'password1')).toBe('ok');
    c.close();
    expect(await admin((a) => a.query('SELECT email FROM public.users'), db).then((q) => q.rows)).toEqual([{ email: 'a@example.org' }]);
    expect(await admin((a) => a.query('SELECT name FROM chat.users'), db).then((q) => q.rows)).toEqual([{ name: 'beside' }]);
  });

  it('a database with no schema to create in (public dropped): a line saying to create one and name it, exit code 2', async () => {
    const db = `nopublic_${process.pid}`;
    const url = await createDatabase(base!, db);
    await admin((c) => c.query('DROP SCHEMA public'), db);
    const r = await refused(['--data', data(), '--store', url]);
    expect(r.code).toBe(2);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(/^textserver: PostgreSQL: no schema to create textserver's tables in \(core schema\): no schema has been selected to create in; .*search_path/);
  });

  it('a database whose encoding cannot hold every text (LATIN1): a line saying to make it UTF8, exit code 2', async () => {
    const db = `latin1_${process.pid}`;
    await admin((c) => c.query(`CREATE DATABASE ${db} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`));
    const u = new URL(base!);
    u.pathname = `/${db}`;
    const r = await refused(['--data', data(), '--store', u.toString()]);
    expect(r.code).toBe(2);
    expect(r.lines).toEqual([
      `textserver: PostgreSQL: the database ${db} is encoded in LATIN1, which cannot hold every text textserver stores; create it with ENCODING 'UTF8' (createdb -E UTF8 -T template0)`,
    ]);
  });

  it.runIf(inject('redisUrl') !== undefined)('a cluster node names itself once per log line', async () => {
    const url = await createDatabase(base!, `nodelog_${process.pid}`);
    const s = await started(['--data', data(), '--store', url, '--bus', inject('redisUrl')!, '--node-id', 'probe-1']);
    const line = await s.waitForLine(/"msg":"cluster node"/);
    expect(line.match(/"node":/g)).toHaveLength(1);
    expect(JSON.parse(line)).toMatchObject({ node: 'probe-1' });
  });

  // three server processes started one after another: 4-6 s alone, past the default 20 s once on a loaded machine
  it.runIf(inject('redisUrl') !== undefined)('a second live node under one --node-id is refused; a killed node restarts under its name', { timeout: 60_000 }, async () => {
    const url = await createDatabase(base!, `nodeid_${process.pid}`);
    const id = `twin-${process.pid}`;
    const node = (dir: string) => ['--data', dir, '--store', url, '--bus', inject('redisUrl')!, '--node-id', id, '--presence-ttl', '1'];
    const first = await started(node(data()));
    const twin = await refused([...node(data()), ...FAST_HASH]);
    expect(twin.code).toBe(2);
    expect(twin.lines).toEqual([`textserver: --node-id: another live node of this cluster is named ${id}; give each node its own --node-id`]);
    // the first one kept its presence: it still serves, and its heartbeat is still being refreshed
    const c = await RawConnection.open(first.port);
    expect(await c.ask('nop')).toBe('');
    c.close();
    first.proc.kill('SIGKILL');
    await first.exited;
    await started(node(data()));
  });
});

describe.runIf(base !== undefined)('a PostgreSQL that asks for a password (SCRAM, as an operator runs it)', () => {
  const PASSWORD = 'right p@ss';
  let cluster: Postgres;

  beforeAll(async () => {
    cluster = await startPostgres({ password: PASSWORD });
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  function withPassword(password: string | undefined): string {
    const u = new URL(cluster.url);
    u.password = password === undefined ? '' : encodeURIComponent(password);
    return u.toString();
  }

  it('a wrong password: one line, exit code 2, neither password in it', async () => {
    const r = await refused(['--data', data(), '--store', withPassword('wr0ng secret')]);
    expect(r.code).toBe(2);
    expect(r.lines).toEqual([`textserver: cannot reach PostgreSQL at postgres://postgres:***@127.0.0.1:${cluster.port}/postgres: password authentication failed for user "postgres"`]);
  });

  it('no password at all: one line saying the server asks for one, exit code 2 (the process does not hang)', async () => {
    const r = await refused(['--data', data(), '--store', withPassword(undefined)]);
    expect(r.code).toBe(2);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(/^textserver: cannot reach PostgreSQL at postgres:\/\/postgres@127\.0\.0\.1:\d+\/postgres: the server asks for a password and none was given/);
  });

  it('the right password percent-encoded in the URL starts and writes', async () => {
    const s = await started(['--data', data(), '--store', withPassword(PASSWORD)]);
    const c = await RawConnection.open(s.port);
    expect(await c.ask('register', 'scram', 'password1')).toBe('ok');
    c.close();
    expect(s.lines.join('\n')).not.toContain(encodeURIComponent(PASSWORD));
  });
});
