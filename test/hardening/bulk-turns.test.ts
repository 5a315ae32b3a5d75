/**
 * Many clients replaying or paging a big inbox at once (DELIVERY.md): each
 * reader's pages are bounded, but together they did all their pages in one
 * turn of the event loop, and every other client waited behind them (30
 * connections resuming 200 entries of 900 KB: another client's `nop` p50
 * 0.3-0.6 s, max up to 3 s). The bulk budget (src/core/bulk-turns.ts)
 * spreads them over turns. Counted per turn, not timed: the test process
 * is the server's process, so the turn counter is the server's.
 */
import net from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { RawConnection } from '../helpers/raw.ts';
import { removeDir, startServer, type TestServer } from '../helpers/server.ts';
import { freshUsers, loggedIn, PW } from '../helpers/users.ts';
import { range, seqOf, waitEntries } from '../delivery/helpers.ts';
import { Session } from '../../src/core/session.ts';
import { OutFrame } from '../../src/core/out-frame.ts';
import { currentTurn } from '../../src/core/turns.ts';
import { BULK_BYTES_PER_TURN } from '../../src/core/bulk-turns.ts';
import { InboxData, pageBytes, type InboxRow } from '../../src/store/inbox-data.ts';

const servers: TestServer[] = [];
const opened: RawConnection[] = [];

afterEach(async () => {
  vi.restoreAllMocks();
  for (const c of opened.splice(0)) c.close();
  for (const s of servers.splice(0)) {
    await s.stop();
    removeDir(s.data);
  }
});

/** Adds `bytes` to the current turn's count in `perTurn`. */
function count(perTurn: Map<number, number>, bytes: number): void {
  const turn = currentTurn();
  perTurn.set(turn, (perTurn.get(turn) ?? 0) + bytes);
}

/** `inbox,...` bytes pushed to connections, per turn. */
function inboxPushesPerTurn(): Map<number, number> {
  const perTurn = new Map<number, number>();
  const original = Session.prototype.pushFrame;
  vi.spyOn(Session.prototype, 'pushFrame').mockImplementation(function (this: Session, frame: OutFrame, written) {
    if (frame.payload.startsWith('inbox,')) count(perTurn, frame.payload.length);
    return original.call(this, frame, written);
  });
  return perTurn;
}

/** Payload bytes read from the inbox (replays and GET /api/inbox), per turn. */
function readsPerTurn(): Map<number, number> {
  const perTurn = new Map<number, number>();
  const original = InboxData.prototype.after;
  vi.spyOn(InboxData.prototype, 'after').mockImplementation(async function (this: InboxData, ...args: Parameters<InboxData['after']>) {
    const page = await original.apply(this, args);
    count(
      perTurn,
      page.rows.reduce((n: number, r: InboxRow) => n + r.payload.length, 0),
    );
    return page;
  });
  return perTurn;
}

/** `history,...` reply bytes formatted, per turn (a reply is formatted in the turn it is written). */
function historyRepliesPerTurn(): Map<number, number> {
  const perTurn = new Map<number, number>();
  const original = OutFrame.of;
  vi.spyOn(OutFrame, 'of').mockImplementation((fields: readonly string[]) => {
    const frame = original.call(OutFrame, fields);
    if (fields[0] === 'history') count(perTurn, frame.payload.length);
    return frame;
  });
  return perTurn;
}

const ENTRY = 200_000;
const CLIENTS = 6;

/** A user whose inbox holds 60 entries of about 200 KB (30 sends to itself: entry and carbon). */
async function bigInbox(s: TestServer): Promise<string> {
  const [u] = await freshUsers(s.port, 'bulk');
  const c = await loggedIn(s.port, u!, opened);
  for (let i = 0; i < 30; i++) {
    c.send('send', u!, 'm', `${i}${'x'.repeat(ENTRY)}`);
    let reply = await c.next(10_000);
    while (reply.startsWith('send,')) reply = await c.next(10_000);
    expect(reply).toBe('ok');
  }
  c.close();
  return u!;
}

describe('bulk reads and writes of many inbox readers take turns', () => {
  it('replays of a big inbox to many connections at once: a bounded amount per turn, and every connection gets every entry', async () => {
    const s = await startServer(['--user-bytes', '0']);
    servers.push(s);
    const u = await bigInbox(s);
    const cs: RawConnection[] = [];
    for (let i = 0; i < CLIENTS; i++) {
      const c = await RawConnection.open(s.port);
      opened.push(c);
      expect(await c.ask('sync')).toBe('ok');
      expect(await c.ask('login', u, PW)).toBe('ok');
      cs.push(c);
    }
    const pushed = inboxPushesPerTurn();
    const read = readsPerTurn();
    // all at once: the resumes are run in the same turn
    for (const c of cs) c.send('resume', '', '0');
    for (const c of cs) expect((await waitEntries(c, 60, 60_000)).map(seqOf)).toEqual(range(1, 60));

    const total = [...pushed.values()].reduce((a, b) => a + b, 0);
    expect(total).toBeGreaterThanOrEqual(CLIENTS * 60 * ENTRY);
    // a turn admits work while its budget is not spent: at most the budget and one entry written, and one page read
    expect(Math.max(...pushed.values())).toBeLessThanOrEqual(BULK_BYTES_PER_TURN + ENTRY + 100);
    expect(Math.max(...read.values())).toBeLessThanOrEqual(BULK_BYTES_PER_TURN + pageBytes(4 * 1024 * 1024));
  });

  it('GET /api/inbox pages asked at once: one page read per turn past the budget', async () => {
    const s = await startServer(['--user-bytes', '0', '--http-port', '0']);
    servers.push(s);
    const u = await bigInbox(s);
    const base = `http://127.0.0.1:${s.server.httpPort}`;
    const login = await fetch(`${base}/api/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: u, password: PW }),
    });
    const { token } = (await login.json()) as { token: string };
    const read = readsPerTurn();
    // pipelined on one connection: the server parses them from one read, in one turn
    const socket = net.connect({ port: s.server.httpPort!, host: '127.0.0.1' });
    const request = `GET /api/inbox?after=0&limit=1000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`;
    socket.write(request.repeat(CLIENTS * 2));
    let received = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (received += d));
    await vi.waitFor(() => expect(received.split('HTTP/1.1 200').length - 1).toBe(CLIENTS * 2), { timeout: 60_000, interval: 50 });
    socket.destroy();
    const pages = [...received.matchAll(/"entries":\[\{"seq":(\d+)/g)].map((m) => [Number(m[1])]);
    expect(pages).toHaveLength(CLIENTS * 2);
    for (const seqs of pages) expect(seqs[0]).toBe(1);
    expect(Math.max(...read.values())).toBeLessThanOrEqual(BULK_BYTES_PER_TURN + pageBytes(4 * 1024 * 1024));
  });

  it('history pages of big messages asked by many members at once: bounded per turn, every page whole', async () => {
    const s = await startServer(['--user-bytes', '0']);
    servers.push(s);
    const users = await freshUsers(s.port, 'bulkh', ...Array.from({ length: CLIENTS }, () => 'bulkr'));
    const room = `bulk-${process.pid}`;
    const poster = await loggedIn(s.port, users[0]!, opened);
    expect(await poster.ask('join', room)).toBe(`room,${room},joined,${users[0]}`);
    await poster.next();
    for (let i = 0; i < 12; i++) {
      poster.send('say', room, `${i}${'h'.repeat(ENTRY)}`);
      let reply = await poster.next(10_000);
      while (reply.startsWith('room,')) reply = await poster.next(10_000);
      expect(reply).toMatch(/^said,/);
    }
    const readers: RawConnection[] = [];
    for (const u of users.slice(1)) {
      const c = await loggedIn(s.port, u, opened);
      c.send('join', room);
      await c.nextN(2);
      readers.push(c);
    }
    const replies = historyRepliesPerTurn();
    // pipelined, all at once: 4 pages of 1 MiB (5 messages) or less each, for every reader
    for (const c of readers) for (let i = 0; i < 4; i++) c.send('history', room, 'last', '500');
    for (const c of readers) {
      const pages = () => c.frames.filter((f) => f.startsWith('history,'));
      await vi.waitFor(() => expect(pages()).toHaveLength(4), { timeout: 30_000, interval: 50 });
      for (const page of pages()) expect(page).toMatch(new RegExp(`^history,${room},5,.*,more$`));
    }
    // the budget, and one page past it
    expect(Math.max(...replies.values())).toBeLessThanOrEqual(BULK_BYTES_PER_TURN + 1024 * 1024 + 1000);
  });
});
