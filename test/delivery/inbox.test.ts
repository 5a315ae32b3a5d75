/**
 * DELIVERY.md sections 1 to 3 over real sockets: inbox connections
 * (`sync`, `resume`), carbons, replays with no gap and no repeat, and
 * version 1 connections next to them seeing exactly what PROTOCOL.md says.
 */
import { describe, expect, it } from 'vitest';
import { InboxData } from '../../src/store/inbox-data.ts';
import { eventually } from '../helpers/eventually.ts';
import { api } from '../helpers/ws.ts';
import { errorOf, expectNoMoreFrames, PW, serverFixture } from '../helpers/users.ts';
import { entries, inboxConnection, range, seqOf, waitEntries } from './helpers.ts';

// no rate limit: some tests flood on purpose
const f = serverFixture(['--mailbox-size', '5', '--http-port', '0', '--user-rate', '0', '--user-bytes', '0']);
const inbox = (user: string, epoch = '', after = '0') => inboxConnection(f.srv.port, user, epoch, after, f.opened);
/** Entries of the user no connection has received yet. */
const pending = async (user: string) => new InboxData(f.srv.server.core.store).pendingCount((await f.srv.server.core.users.find(user))!.id);

describe('inbox connections', () => {
  it('resume on an empty inbox answers resumed,<epoch>,0 and keeps the epoch', async () => {
    const [u] = await f.users('empty');
    const a = await inbox(u!);
    expect(a.head).toBe(0);
    const b = await inbox(u!, a.epoch, '0');
    expect(b.epoch).toBe(a.epoch);
    await expectNoMoreFrames(a.c);
  });

  it('numbers every delivered frame, and the sender gets a carbon before its ok on every inbox connection', async () => {
    const [alice, bob] = await f.users('ali', 'bob');
    const a = await inbox(alice!);
    const b1 = await inbox(bob!);
    const b2 = await inbox(bob!);
    const bobV1 = await f.loggedIn(bob!);
    b1.c.send('send', alice!.toUpperCase(), 'msg', 'hi, there');
    // the carbon of a send made on this very connection comes before its reply
    expect(await b1.c.nextN(2)).toEqual([`inbox,1,sent,${alice},msg,hi\\, there`, 'ok']);
    expect(await a.c.next()).toBe(`inbox,1,send,${bob},msg,hi\\, there`);
    expect(await b2.c.next()).toBe(`inbox,1,sent,${alice},msg,hi\\, there`);
    // a version 1 connection never sees carbons
    await expectNoMoreFrames(bobV1);
    // entries are not also sent in their version 1 form
    await expectNoMoreFrames(a.c);
  });

  it('a send to oneself makes one entry and one carbon; a version 1 connection of the user gets the entry', async () => {
    const [me] = await f.users('self');
    const a = await inbox(me!);
    const v1 = await f.loggedIn(me!);
    a.c.send('send', me!, 'note', 'x');
    expect(await a.c.nextN(3)).toEqual([`inbox,1,send,${me},note,x`, `inbox,2,sent,${me},note,x`, 'ok']);
    expect(await v1.next()).toBe(`send,${me},note,x`);
    await expectNoMoreFrames(v1);
  });

  it('replays from a position, from latest, and with an empty epoch; then live entries follow', async () => {
    const [to, from] = await f.users('rto', 'rfrom');
    const d = await f.loggedIn(from!);
    const a = await inbox(to!);
    for (let i = 1; i <= 4; i++) expect(await d.ask('send', to!, 'n', String(i))).toBe('ok');
    await waitEntries(a.c, 4);
    const b = await inbox(to!, a.epoch, '2');
    expect(b.head).toBe(4);
    expect(await b.c.nextN(2)).toEqual([`inbox,3,send,${from},n,3`, `inbox,4,send,${from},n,4`]);
    const latest = await inbox(to!, '', 'latest');
    expect(latest.head).toBe(4);
    expect(await d.ask('send', to!, 'n', '5')).toBe('ok');
    expect(await latest.c.next()).toBe(`inbox,5,send,${from},n,5`);
    expect(await b.c.next()).toBe(`inbox,5,send,${from},n,5`);
    await expectNoMoreFrames(latest.c);
    // resuming again on the same connection restarts the stream from the new position
    latest.c.send('resume', a.epoch, '3');
    expect(await latest.c.nextN(3)).toEqual(['resumed,' + a.epoch + ',5', `inbox,4,send,${from},n,4`, `inbox,5,send,${from},n,5`]);
    await expectNoMoreFrames(latest.c);
  });

  it('answers stream_reset for another epoch or a seq past the head, and a failed resume leaves the connection as it was', async () => {
    const [to, from] = await f.users('sto', 'sfrom');
    const a = await inbox(to!);
    const d = await f.loggedIn(from!);
    expect(await d.ask('send', to!, 'one')).toBe('ok');
    expect(await a.c.next()).toBe(`inbox,1,send,${from},one`);
    expect(await a.c.ask('resume', 'Elsewhere1', '0')).toMatch(errorOf('stream_reset'));
    expect(await a.c.ask('resume', a.epoch, '2')).toMatch(errorOf('stream_reset'));
    // still streaming from where it was
    expect(await d.ask('send', to!, 'two')).toBe('ok');
    expect(await a.c.next()).toBe(`inbox,2,send,${from},two`);
    // a version 1 connection whose resume fails stays version 1
    const v1 = await f.loggedIn(to!);
    expect(await v1.ask('resume', 'Elsewhere1', '0')).toMatch(errorOf('stream_reset'));
    expect(await d.ask('send', to!, 'three')).toBe('ok');
    expect(await v1.next()).toBe(`send,${from},three`);
  });

  it('checks its arguments and the login', async () => {
    const [u] = await f.users('args');
    const c = await f.open();
    expect(await c.ask('sync')).toBe('ok'); // before login is fine
    expect(await c.ask('resume', '', '0')).toMatch(errorOf('not_logged_in'));
    expect(await c.ask('login', u!, PW)).toBe('ok');
    for (const bad of [
      ['resume', '', '-1'],
      ['resume', '', 'x'],
      ['resume', ''],
      ['resume', '', '1.5'],
      ['sync', 'x'],
    ]) {
      expect(await c.ask(...bad)).toMatch(errorOf('syntax'));
    }
    expect(await c.ask('help', 'resume')).toMatch(/^help,resume,resume\\,<epoch>\\,<after> -> resumed/);
    expect((await c.ask('pushes')).split(',')).toContain('inbox');
  });

  it('resume implies sync: a later login is not followed by stored frames and stops the stream until the next resume', async () => {
    const [to, from] = await f.users('lto', 'lfrom');
    const d = await f.loggedIn(from!);
    expect(await d.ask('send', to!, 'stored')).toBe('ok'); // to is offline: pending
    const c = await f.open();
    expect(await c.ask('login', to!, PW)).toBe('ok');
    expect(await c.next()).toBe(`send,${from},stored`); // version 1 so far: drained
    const r = await c.ask('resume', '', 'latest');
    expect(r).toMatch(/^resumed,\w+,1$/);
    expect(await d.ask('send', to!, 'live')).toBe('ok');
    expect(await c.next()).toBe(`inbox,2,send,${from},live`);
    expect(await c.ask('login', to!, PW)).toBe('ok');
    expect(await d.ask('send', to!, 'unseen')).toBe('ok');
    await expectNoMoreFrames(c); // stopped, and no drain either
    expect(await c.ask('resume', '', '2')).toMatch(/^resumed,\w+,3$/);
    expect(await c.next()).toBe(`inbox,3,send,${from},unseen`);
  });

  it('a version 1 login drains only entries no connection received, never carbons; an inbox login drains nothing', async () => {
    const [to, from] = await f.users('dto', 'dfrom');
    const d = await f.loggedIn(from!);
    expect(await d.ask('send', to!, 'a')).toBe('ok');
    expect(await d.ask('send', to!, 'b')).toBe('ok');
    // an inbox connection's login does not drain
    const s = await f.open();
    expect(await s.ask('sync')).toBe('ok');
    expect(await s.ask('login', to!, PW)).toBe('ok');
    await expectNoMoreFrames(s);
    s.close();
    await s.closedPromise;
    // a replay counts as received
    const r = await inbox(to!, '', '1');
    expect(await r.c.next()).toBe(`inbox,2,send,${from},b`);
    r.c.close();
    await r.c.closedPromise;
    await eventually(async () => expect(await pending(to!)).toBe(1));
    const v1 = await f.open();
    v1.send('login', to!, PW);
    expect(await v1.nextN(2)).toEqual(['ok', `send,${from},a`]);
    await expectNoMoreFrames(v1);
    // the carbons of what `to` sends never reach a version 1 drain
    expect(await v1.ask('send', from!, 'back')).toBe('ok');
    v1.close();
    await v1.closedPromise;
    const again = await f.open();
    expect(await again.ask('login', to!, PW)).toBe('ok');
    await expectNoMoreFrames(again);
  });

  it('mailbox_full counts entries not yet received: a replay to an inbox connection frees room', async () => {
    const [to, from] = await f.users('mto', 'mfrom');
    const d = await f.loggedIn(from!);
    for (let i = 0; i < 5; i++) expect(await d.ask('send', to!, 'n', String(i))).toBe('ok');
    expect(await d.ask('send', to!, 'n', 'full')).toMatch(errorOf('mailbox_full'));
    // the sender's carbons do not count toward the sender's own mailbox
    const back = await inbox(to!, '', '0');
    await waitEntries(back.c, 5);
    back.c.close();
    await back.c.closedPromise;
    await expect.poll(async () => d.ask('send', to!, 'n', 'room again'), { timeout: 5000 }).toBe('ok');
  });

  it('sends at once to an offline user: exactly --mailbox-size are stored, the others mailbox_full, seqs dense', async () => {
    // on PostgreSQL the sends of one turn share a transaction once both streams exist (the warm-up)
    const SENDERS = 8;
    const [to, ...from] = await f.users('burstto', ...Array.from({ length: SENDERS }, (_, i) => `burst${i}_`));
    const live = await inbox(to!);
    const senders = await Promise.all(from.map((u) => f.loggedIn(u)));
    for (const s of senders) expect(await s.ask('send', to!, 'warm')).toBe('ok');
    await waitEntries(live.c, SENDERS);
    live.c.close();
    await live.c.closedPromise;
    await eventually(async () => expect(f.srv.server.core.hub.sessionsOf((await f.srv.server.core.users.find(to!))!.id)).toHaveLength(0));
    for (const [i, s] of senders.entries()) s.send('send', to!, 'burst', String(i));
    const replies = await Promise.all(senders.map((s) => s.next()));
    const stored = replies.flatMap((r, i) => (r === 'ok' ? [i] : []));
    expect(stored).toHaveLength(5);
    for (const r of replies) if (r !== 'ok') expect(r).toMatch(errorOf('mailbox_full'));
    const back = await inbox(to!, live.epoch, String(SENDERS));
    expect(back.head).toBe(SENDERS + 5);
    const burst = await waitEntries(back.c, 5);
    expect(burst.map(seqOf)).toEqual(range(SENDERS + 1, SENDERS + 5));
    expect(burst.map((e) => Number(e.split(',').at(-1))).sort()).toEqual(stored);
    // a refused send left no carbon: each sender's stream holds its warm-up carbon, and the burst's only if stored
    for (const [i, u] of from.entries()) {
      const mine = await inbox(u!, '', '0');
      expect(mine.head).toBe(stored.includes(i) ? 2 : 1);
      mine.c.close();
    }
  });

  it('recovers the 500 messages a dropped connection was written but never read', async () => {
    const [to, from] = await f.users('bigto', 'bigfrom');
    const a = await inbox(to!);
    const d = await f.loggedIn(from!);
    const text = 'x'.repeat(2000);
    for (let i = 1; i <= 500; i++) d.send('send', to!, 'n', String(i), text);
    await d.nextN(500, 20_000);
    await waitEntries(a.c, 100);
    a.c.close(); // the app processed 100 and died: whatever else was written was never read
    const processed = entries(a.c).slice(0, 100).map(seqOf);
    expect(processed).toEqual(range(1, 100));
    const b = await inbox(to!, a.epoch, '100');
    expect(b.head).toBe(500);
    const rest = (await waitEntries(b.c, 400)).map(seqOf);
    expect([...processed, ...rest]).toEqual(range(1, 500));
    expect(entries(b.c).at(-1)).toBe(`inbox,500,send,${from},n,500,${text}`);
    // and the version 1 case: a connection that was written 300 messages live but never read them, then died
    const [off] = await f.users('bigoff');
    const v1 = await f.loggedIn(off!);
    v1.socket.pause();
    for (let i = 1; i <= 300; i++) d.send('send', off!, 'n', String(i));
    expect((await d.nextN(300, 20_000)).filter((r) => r !== 'ok')).toEqual([]);
    v1.close();
    const all = await inbox(off!);
    expect(all.head).toBe(300);
    expect((await waitEntries(all.c, 300)).map(seqOf)).toEqual(range(1, 300));
  }, 60_000);

  it('no gap and no repeat when live sends race a replay', async () => {
    const [to, ...senders] = await f.users('raceto', 'race1', 'race2', 'race3');
    const conns = await Promise.all(senders.map((s) => f.loggedIn(s!)));
    const warm = await inbox(to!);
    for (let i = 0; i < 200; i++) conns[i % 3]!.send('send', to!, 'warm', String(i));
    await Promise.all(conns.map((c, k) => c.nextN(k < 2 ? 67 : 66, 20_000)));
    await waitEntries(warm.c, 200);
    // a new device replays everything while the three keep sending
    const sending = conns.map(async (c) => {
      for (let i = 0; i < 100; i++) c.send('send', to!, 'live', String(i));
      return c.nextN(100, 20_000);
    });
    const replay = await inbox(to!, '', '0');
    await Promise.all(sending);
    const seqs = (await waitEntries(replay.c, 500, 20_000)).map(seqOf);
    expect(seqs).toEqual(range(1, 500));
    await waitEntries(warm.c, 500);
    expect(entries(warm.c).map(seqOf)).toEqual(range(1, 500));
    // nothing more: a nop's reply comes after everything queued before it
    replay.c.send('nop');
    await eventually(() => expect(replay.c.frames.at(-1)).toBe(''));
    expect(entries(replay.c).length).toBe(500);
  }, 60_000);

  it('HTTP: GET /api/inbox pages entries, answers stream_reset as 409, and what it returns counts as received', async () => {
    const base = `http://127.0.0.1:${f.srv.server.httpPort}`;
    const [to, from] = await f.users('hto', 'hfrom');
    const d = await f.loggedIn(from!);
    for (const t of ['one', 'two, three']) expect(await d.ask('send', to!, 'msg', t)).toBe('ok');
    const token = (await api(base, 'POST', '/api/login', { user: to, password: PW })).json.token as string;
    const page = await api(base, 'GET', '/api/inbox?after=0&limit=1', undefined, token);
    expect(page.status).toBe(200);
    expect(page.json).toEqual({ epoch: expect.stringMatching(/^[A-Za-z0-9]{8,16}$/), head: 2, entries: [{ seq: 1, fields: ['send', from, 'msg', 'one'] }] });
    const rest = await api(base, 'GET', '/api/inbox?after=1', undefined, token);
    expect(rest.json.entries).toEqual([{ seq: 2, fields: ['send', from, 'msg', 'two, three'] }]);
    expect(await api(base, 'GET', '/api/inbox?after=9', undefined, token)).toMatchObject({ status: 409, json: { error: 'stream_reset' } });
    expect(await api(base, 'GET', `/api/inbox?epoch=${page.json.epoch}x`, undefined, token)).toMatchObject({ status: 409, json: { error: 'stream_reset' } });
    expect(await api(base, 'GET', '/api/inbox?after=x', undefined, token)).toMatchObject({ status: 400, json: { error: 'syntax' } });
    expect(await api(base, 'GET', '/api/inbox?limit=0', undefined, token)).toMatchObject({ status: 400, json: { error: 'syntax' } });
    expect((await api(base, 'GET', '/api/inbox')).status).toBe(401);
    // received over HTTP: nothing is left for a version 1 login
    await eventually(async () => expect(await pending(to!)).toBe(0));
  });
});
