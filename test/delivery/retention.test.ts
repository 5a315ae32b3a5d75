/**
 * DELIVERY.md sections 1 and 5: retention (the window, the age, never an
 * entry not yet received), a restart keeping seqs and the epoch, and the
 * upgrade that turns stored messages into pending inbox entries.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { Kysely } from 'kysely';
import { createLogger } from '../../src/log.ts';
import { CORE_MIGRATIONS } from '../../src/store/core-data.ts';
import { openStore } from '../../src/store/open-store.ts';
import { RawConnection } from '../helpers/raw.ts';
import { removeDir, startServer, storeArgs, tempDir, type TestServer } from '../helpers/server.ts';
import { errorOf, expectNoMoreFrames, freshUsers, loggedIn, PW } from '../helpers/users.ts';
import { eventually } from '../helpers/eventually.ts';
import { inboxConnection, range, seqOf, waitEntries } from './helpers.ts';

const opened: RawConnection[] = [];
const servers: TestServer[] = [];

afterAll(async () => {
  for (const c of opened) c.close();
  for (const s of servers) {
    await s.stop();
    removeDir(s.data);
  }
});

async function server(args: string[], data?: string): Promise<TestServer> {
  const s = await startServer(['--user-rate', '0', ...args], data);
  servers.push(s);
  return s;
}

describe('retention', () => {
  it('drops received entries past --inbox-retain within seconds, never one not yet received', async () => {
    const s = await server(['--inbox-retain', '5']);
    const [to, off, from] = await freshUsers(s.port, 'wto', 'woff', 'wfrom');
    const a = await inboxConnection(s.port, to!, '', '0', opened);
    const d = await loggedIn(s.port, from!, opened);
    for (let i = 1; i <= 12; i++) expect(await d.ask('send', to!, 'n', String(i))).toBe('ok');
    for (let i = 1; i <= 8; i++) expect(await d.ask('send', off!, 'n', String(i))).toBe('ok');
    await waitEntries(a.c, 12);
    // the sweeper runs by itself every two seconds
    await eventually(
      async () => {
        const c = await RawConnection.open(s.port);
        opened.push(c);
        expect(await c.ask('sync')).toBe('ok');
        expect(await c.ask('login', to!, PW)).toBe('ok');
        expect(await c.ask('resume', a.epoch, '0')).toMatch(errorOf('stream_reset'));
      },
      10_000,
      200,
    );
    const c = await inboxConnection(s.port, to!, a.epoch, '7', opened);
    expect(c.head).toBe(12);
    expect((await waitEntries(c.c, 5)).map(seqOf)).toEqual(range(8, 12));
    // the sender's carbons are entries of its own inbox, under the same window
    const carbons = await inboxConnection(s.port, from!, '', '15', opened);
    expect(carbons.head).toBe(20);
    expect((await waitEntries(carbons.c, 5)).map((e) => e.split(',').slice(0, 3).join(','))).toEqual(range(16, 20).map((n) => `inbox,${n},sent`));
    // eight entries not yet received, past a window of five: all kept
    const v1 = await loggedIn(s.port, off!, opened);
    expect(await v1.nextN(8)).toEqual(range(1, 8).map((n) => `send,${from},n,${n}`));
  });

  it('drops received entries older than --inbox-max-age, never one not yet received', async () => {
    const s = await server([]);
    const [to, off, from] = await freshUsers(s.port, 'ato', 'aoff', 'afrom');
    const a = await inboxConnection(s.port, to!, '', '0', opened);
    const d = await loggedIn(s.port, from!, opened);
    for (let i = 1; i <= 3; i++) expect(await d.ask('send', to!, 'n', String(i))).toBe('ok');
    expect(await d.ask('send', off!, 'kept')).toBe('ok');
    await waitEntries(a.c, 3);
    // as the sweeper would 31 days from now
    await s.server.core.hub.inbox.sweep(Date.now() + 31 * 86_400_000);
    const b = await inboxConnection(s.port, to!, a.epoch, 'latest', opened);
    expect(b.head).toBe(3);
    expect(await b.c.ask('resume', a.epoch, '0')).toMatch(errorOf('stream_reset'));
    expect(await b.c.ask('resume', a.epoch, '3')).toBe(`resumed,${a.epoch},3`);
    const v1 = await loggedIn(s.port, off!, opened);
    expect(await v1.next()).toBe(`send,${from},kept`);
    // the flag takes days, fractions too
    const young = await server(['--inbox-max-age', '0.5']);
    expect(young.server.core.options.inboxMaxAgeMs).toBe(43_200_000);
  });
});

describe('restart', () => {
  it('keeps seqs and the epoch across a stop and a start on the same data', async () => {
    const data = tempDir();
    const first = await startServer(['--user-rate', '0'], data);
    const [to, from] = await freshUsers(first.port, 'rsto', 'rsfrom');
    const d = await loggedIn(first.port, from!, opened);
    for (let i = 1; i <= 3; i++) expect(await d.ask('send', to!, 'n', String(i))).toBe('ok');
    const a = await inboxConnection(first.port, to!, '', '0', opened);
    await waitEntries(a.c, 3);
    await first.stop();
    const second = await server(['--user-rate', '0'], data);
    const b = await inboxConnection(second.port, to!, a.epoch, '1', opened);
    expect(b.head).toBe(3);
    expect(await b.c.nextN(2)).toEqual([`inbox,2,send,${from},n,2`, `inbox,3,send,${from},n,3`]);
    const d2 = await loggedIn(second.port, from!, opened);
    expect(await d2.ask('send', to!, 'n', '4')).toBe('ok');
    expect(await b.c.next()).toBe(`inbox,4,send,${from},n,4`);
    await expectNoMoreFrames(b.c);
  });
});

describe('upgrade', () => {
  it('turns stored messages into pending inbox entries, oldest first, and version 1 logins still get them', async () => {
    const data = tempDir();
    const store = await openStore((await storeArgs(data))[1] ?? 'sqlite', data, createLogger('silent'));
    await store.migrate('core', CORE_MIGRATIONS.slice(0, 1));
    await store.transaction(async (tx: Kysely<any>) => {
      const ids: number[] = [];
      for (const name of ['Oldann', 'Oldbob']) {
        const row = await tx
          .insertInto('users')
          .values({ name, name_key: name.toLowerCase(), hash: 'x', created_at: 1 })
          .returning('id')
          .executeTakeFirstOrThrow();
        ids.push(Number(row.id));
      }
      const [ann, bob] = ids;
      for (const [user, text] of [
        [bob, 'b1'],
        [ann, 'a1'],
        [bob, 'b2'],
        [ann, 'a2'],
        [bob, 'b3'],
      ] as const) {
        await tx
          .insertInto('mailbox')
          .values({ user_id: user, payload: `send,someone,${text}`, created_at: 5 })
          .execute();
      }
    });
    await store.migrate('core', CORE_MIGRATIONS);
    const rows = await store.db
      .selectFrom('inbox')
      .innerJoin('users', 'users.id', 'inbox.user_id')
      .select(['name', 'seq', 'kind', 'pending', 'payload'])
      .orderBy('name')
      .orderBy('seq')
      .execute();
    expect(rows.map((r) => [r.name, Number(r.seq), Number(r.kind), Number(r.pending), r.payload])).toEqual([
      ['Oldann', 1, 0, 1, 'send,someone,a1'],
      ['Oldann', 2, 0, 1, 'send,someone,a2'],
      ['Oldbob', 1, 0, 1, 'send,someone,b1'],
      ['Oldbob', 2, 0, 1, 'send,someone,b2'],
      ['Oldbob', 3, 0, 1, 'send,someone,b3'],
    ]);
    const streams = await store.db.selectFrom('inbox_streams').select(['epoch', 'head']).orderBy('head').execute();
    expect(streams.map((s) => Number(s.head))).toEqual([2, 3]);
    for (const s of streams) expect(s.epoch).toMatch(/^[A-Za-z0-9]{8,16}$/);
    await expect(store.db.selectFrom('mailbox').selectAll().execute()).rejects.toThrow();
    await store.close();
    removeDir(data);
  });
});
