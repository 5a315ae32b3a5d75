/**
 * DELIVERY.md probed from outside (branch probe-delivery): each test is a
 * place where the server disagreed with the document, kept so it does not
 * come back.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import { RawConnection } from '../helpers/raw.ts';
import { removeDir, startServer, type TestServer } from '../helpers/server.ts';
import { freshUsers, loggedIn, PW } from '../helpers/users.ts';
import { inboxConnection, range, seqOf, waitEntries } from './helpers.ts';

const servers: TestServer[] = [];
const opened: RawConnection[] = [];

afterEach(async () => {
  for (const c of opened.splice(0)) c.close();
  for (const s of servers.splice(0)) {
    await s.stop();
    removeDir(s.data);
  }
});

async function server(args: string[] = []): Promise<TestServer> {
  const s = await startServer(['--user-rate', '0', '--user-bytes', '0', ...args]);
  servers.push(s);
  return s;
}

/** Sends `texts` from `c`'s user to `to`, pipelined, each answered `ok`. */
async function sendAll(c: RawConnection, to: string, texts: readonly string[]): Promise<void> {
  for (const text of texts) c.send('send', to, 'm', text);
  for (const _ of texts) expect(await c.next(20_000)).toBe('ok');
}

/**
 * Version 1 logins of `user` until they got `count` stored frames in all
 * (the entries they wait for may be marked not yet received one by one, so
 * a login may come between two marks): the frames, in the order they came.
 */
async function v1Logins(port: number, user: string, count: number): Promise<string[]> {
  const got: string[] = [];
  await eventually(
    async () => {
      const c = await RawConnection.open(port);
      opened.push(c);
      try {
        c.send('login', user, PW);
        expect(await c.next()).toBe('ok');
        // what this login gets is received once written, whether or not it is all
        await c.waitFrames(1 + count - got.length, 500).catch(() => {});
        got.push(...c.frames.slice(1));
      } finally {
        c.close();
      }
      expect(got.length).toBeGreaterThanOrEqual(count);
    },
    10_000,
    100,
  );
  return got;
}

/**
 * A user `to` whose 150 entries of 60 KB (far more than the kernel buffers of a client that does not read can hold,
 * about 9 MB) a first inbox connection received (so none waits for a version 1 login), and a second inbox
 * connection `c` that replays them all and does not read: its replay stalls on its window.
 */
async function stalledReplay(prefix: string) {
  const s = await server();
  const [to, from] = await freshUsers(s.port, prefix, `${prefix}from`);
  const sender = await loggedIn(s.port, from!, opened);
  const first = await inboxConnection(s.port, to!, '', '0', opened);
  const big = 'x'.repeat(60_000);
  await sendAll(sender, to!, range(1, 150).map((i) => `${i}${big}`));
  expect((await waitEntries(first.c, 150, 30_000)).map(seqOf)).toEqual(range(1, 150));
  first.c.close();
  const c = await RawConnection.open(s.port);
  opened.push(c);
  expect(await c.ask('sync')).toBe('ok');
  expect(await c.ask('login', to!, PW)).toBe('ok');
  c.send('resume', '', '0');
  expect(await c.next(20_000)).toMatch(/^resumed,[A-Za-z0-9]+,150$/);
  c.socket.pause();
  return { s, to, from, sender, c };
}

describe('entries an inbox connection was offered but never written', () => {
  // Section 2: a version 1 login gets "the entries that no connection of the user has received yet"; section 1:
  // such an entry "is kept regardless until delivered". A live entry that reaches an inbox connection while that
  // connection is still replaying waits behind the replay; if the connection goes away first, nobody received it.
  it('a live entry queued behind a replay is kept for the next version 1 login when the connection drops', async () => {
    const { s, to, from, sender, c } = await stalledReplay('qbr');
    // live entries while it streams: stored as delivered to it, but queued behind the replay
    await sendAll(sender, to!, ['live1', 'live2', 'live3']);
    c.close();

    // nobody received them: a version 1 login gets them (once the server saw the close)
    const got = await v1Logins(s.port, to!, 3);
    expect(got).toEqual(['live1', 'live2', 'live3'].map((t) => `send,${from},m,${t}`));
  });
});

describe('an inbox connection far behind', () => {
  // What a stream owes the entries it took but has not written (the report that it did, or did not) is bounded: past
  // 1024 of them, the newest count as not yet received at once, so a version 1 login gets them even while the stuck
  // connection stays (and memory does not grow with every message sent to a user whose client stopped reading).
  it('past 1024 live entries queued behind a stuck replay, the newer ones are left for a version 1 login', async () => {
    const { s, to, from, sender } = await stalledReplay('far'); // its stuck connection stays open (closed after the test)
    await sendAll(sender, to!, range(1, 1100).map((i) => `live${i}`));
    // the stuck connection is still there; the newest of those live entries are not owed to it any more
    const got = await v1Logins(s.port, to!, 1100 - 1024);
    for (const f of got) expect(f).toMatch(new RegExp(`^send,${from},m,live\\d+$`));
  });
});

describe('a stream restarted over and over while messages arrive', () => {
  // Section 2 and section 5: an entry written to an inbox connection counts as received; one no connection got is
  // kept for the next version 1 login. `resume,,latest` on a streaming connection skips what is not written yet (the
  // client asked for live entries only): those must stay for a version 1 login, and only those, once each.
  it('every message reaches the inbox connection or, once, the next version 1 login', async () => {
    const s = await server();
    const [to, from] = await freshUsers(s.port, 'rst', 'rstfrom');
    const sender = await loggedIn(s.port, from!, opened);
    const { c, epoch } = await inboxConnection(s.port, to!, '', '0', opened);
    let stop = false;
    let n = 0;
    const sending = (async () => {
      while (!stop) {
        const batch = range(n + 1, n + 20).map(String);
        n += 20;
        await sendAll(sender, to!, batch);
      }
    })();
    for (let i = 0; i < 300; i++) {
      c.send('resume', '', 'latest');
      // paced (load, not synchronisation), so the restarts fall among the sends rather than all before them
      await new Promise<void>((r) => setTimeout(r, 2));
    }
    stop = true;
    await sending;
    // every resume answered; then a last message seen live: everything the last run wrote before it has come
    c.send('req', 'end', 'resume', epoch, 'latest');
    await eventually(() => expect(c.frames.some((f) => f.startsWith('req,end,resumed,'))).toBe(true), 10_000);
    expect(await sender.ask('send', to!, 'm', 'last')).toBe('ok');
    await eventually(() => expect(c.frames.at(-1)).toMatch(/,m,last$/), 10_000);
    const inbox = new Set(c.frames.filter((f) => f.startsWith('inbox,')).map((f) => f.split(',').at(-1)!));
    c.close();
    const rest = range(1, n).map(String).filter((t) => !inbox.has(t));
    const v1 = rest.length === 0 ? [] : await v1Logins(s.port, to!, rest.length);
    // exactly the rest, each once (a message shown twice would push one of the rest out of the first rest.length)
    expect(v1.map((f) => f.split(',').at(-1)).sort()).toEqual(rest.sort());
  });
});
