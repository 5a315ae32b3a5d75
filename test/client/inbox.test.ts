/**
 * The client library's inbox and once support against a real server
 * (DELIVERY.md): resume, automatic resume after a reconnect, no repeats,
 * stream_reset, once keys sent again after a reconnect.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { removeDir, startServer, tempDir, type TestServer } from '../helpers/server.ts';
import { connect, type InboxEntry, type Resumed, type TextClient } from '../../src/client/client.ts';
import { inboxSupported, onceSupported } from './inbox-support.ts';

const PW = 'password1';
const hasInbox = await inboxSupported();
const hasOnce = hasInbox && (await onceSupported());
const data = tempDir();
let srv: TestServer;

/** Collects a client's inbox events, and waits for the entry with a given seq. */
function recorder(c: TextClient) {
  const entries: InboxEntry[] = [];
  const order: string[] = [];
  c.on('inbox', (e) => {
    entries.push(e);
    order.push(`#${e.seq}`);
  });
  c.on('resumed', (r) => order.push(`resumed ${r.head}`));
  return {
    entries,
    order,
    texts: () => entries.map((e) => e.fields.join(',')),
    /** Until an entry with this seq (or a later one) came. */
    until(seq: number): Promise<void> {
      return this.count(0, seq);
    },
    /** Until this many entries came (and one with seq ≥ `seq`). */
    count(n: number, seq = 0): Promise<void> {
      const done = () => entries.length >= n && entries.some((e) => e.seq >= seq);
      if (done()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`waited for ${n} entries up to seq ${seq}; got ${entries.map((e) => e.seq).join(' ')}`)), 10_000);
        const check = () => {
          if (!done()) return;
          clearTimeout(timer);
          c.off('inbox', check);
          resolve();
        };
        c.on('inbox', check);
      });
    },
  };
}

beforeAll(async () => {
  if (!hasInbox) return;
  srv = await startServer([], data);
  const c = await connect({ port: srv.port });
  for (const u of ['ib_a', 'ib_b', 'ib_c', 'ib_d', 'ib_e']) await c.call('register', u, PW);
  await c.close();
});

afterAll(async () => {
  await srv?.stop();
  removeDir(data);
});

describe.skipIf(!hasInbox)('client library: the inbox', () => {
  it('resumes a new device from 0: received entries and carbons, in seq order, after the resumed event', async () => {
    const b = await connect({ port: srv.port });
    await b.login('ib_b', PW);
    await b.call('send', 'ib_a', 'msg', 'one');
    await b.call('send', 'ib_a', 'msg', 'two, with a comma');
    const a = await connect({ port: srv.port });
    await a.login('ib_a', PW);
    await a.call('send', 'ib_b', 'msg', 'three');
    const rec = recorder(a);
    const resumed: Resumed = await a.resume();
    expect(resumed).toMatchObject({ head: 3, after: 0 });
    expect(resumed.epoch).toMatch(/^[A-Za-z0-9]{8,16}$/);
    await rec.until(3);
    expect(rec.order.slice(0, 4)).toEqual(['resumed 3', '#1', '#2', '#3']);
    expect(rec.entries).toEqual([
      { seq: 1, fields: ['send', 'ib_b', 'msg', 'one'], carbon: false },
      { seq: 2, fields: ['send', 'ib_b', 'msg', 'two, with a comma'], carbon: false },
      { seq: 3, fields: ['sent', 'ib_b', 'msg', 'three'], carbon: true },
    ]);
    expect(a.inboxPosition).toEqual({ epoch: resumed.epoch, seq: 3 });
    // live now: a carbon of its own send comes before the send's reply
    const reply = a.request('send', 'ib_b', 'msg', 'four');
    await rec.until(4);
    expect(await reply).toEqual(['ok']);
    expect(rec.entries.at(-1)).toEqual({ seq: 4, fields: ['sent', 'ib_b', 'msg', 'four'], carbon: true });
    await a.close();
    await b.close();
  });

  it('resumes by itself after a reconnect, from where it was: nothing missed, nothing twice', async () => {
    const a = await connect({ port: srv.port, reconnect: { initialDelayMs: 20, maxDelayMs: 100 } });
    await a.login('ib_c', PW);
    const rec = recorder(a);
    await a.resume();
    const b = await connect({ port: srv.port });
    await b.login('ib_d', PW);
    await b.call('send', 'ib_c', 'msg', 'before');
    await rec.until(1);
    const frames: string[][] = [];
    a.on('push', (f) => frames.push(f));
    const back = once(a, 'reconnected');
    a.drop();
    await b.call('send', 'ib_c', 'msg', 'while away');
    expect(await back).toEqual([undefined]);
    await b.call('send', 'ib_c', 'msg', 'after');
    await rec.until(3);
    expect(rec.texts()).toEqual(['send,ib_d,msg,before', 'send,ib_d,msg,while away', 'send,ib_d,msg,after']);
    expect(rec.entries.map((e) => e.seq)).toEqual([1, 2, 3]);
    // the resume asked from seq 1: the server never had to send #1 again
    expect(frames.filter((f) => f[0] === 'inbox' && f[1] === '1')).toEqual([]);
    await a.close();
    await b.close();
  });

  it('continues from a stored position on a new client, and drops entries already processed', async () => {
    const b = await connect({ port: srv.port });
    await b.login('ib_e', PW);
    for (const t of ['x1', 'x2', 'x3']) await b.call('send', 'ib_b', 'msg', t);
    const first = await connect({ port: srv.port });
    await first.login('ib_b', PW);
    const r1 = recorder(first);
    await first.resume();
    await r1.until(3);
    const stored = { epoch: first.inboxPosition!.epoch, seq: r1.entries.find((e) => e.fields[3] === 'x2')!.seq };
    await first.close();

    const second = await connect({ port: srv.port });
    await second.login('ib_b', PW);
    const r2 = recorder(second);
    await second.resume(stored);
    await b.call('send', 'ib_b', 'msg', 'x4');
    await r2.until(stored.seq + 2);
    expect(r2.texts()).toEqual(['send,ib_e,msg,x3', 'send,ib_e,msg,x4']);
    await second.close();
    await b.close();
  });

  it('on stream_reset tells the app and goes on with live entries (or from the start when asked)', async () => {
    const a = await connect({ port: srv.port });
    await a.login('ib_a', PW);
    const resets: string[] = [];
    a.on('streamReset', (err) => resets.push(err.type));
    const rec = recorder(a);
    const r = await a.resume({ epoch: 'NotTheEpoch1', seq: 2 });
    expect(resets).toEqual(['stream_reset']);
    expect(r.after).toBe('latest');
    expect(a.inboxPosition?.seq).toBe(r.head);
    expect(rec.entries).toEqual([]);
    await a.close();

    const c = await connect({ port: srv.port, inbox: { onReset: 'start' } });
    await c.login('ib_a', PW);
    const rc = recorder(c);
    const again = await c.resume({ epoch: r.epoch, seq: 10_000 }); // past the head
    expect(again).toMatchObject({ after: 0, epoch: r.epoch });
    await rc.until(again.head);
    expect(rc.entries.map((e) => e.seq)).toEqual(Array.from({ length: again.head }, (_, i) => i + 1));
    await c.close();
  });

  it('a login as another user starts from that user’s own stream', async () => {
    const a = await connect({ port: srv.port });
    await a.login('ib_a', PW);
    const rec = recorder(a);
    const headA = (await a.resume()).head;
    await rec.until(headA);
    await a.login('ib_e', PW);
    // ib_e has only carbons of its sends to ib_b
    await rec.count(headA + 4);
    expect(rec.entries.slice(headA).map((e) => [e.seq, e.carbon])).toEqual([
      [1, true],
      [2, true],
      [3, true],
      [4, true],
    ]);
    await a.close();
  });
});

describe.skipIf(!hasOnce)('client library: once', () => {
  it('runs a command once per key, and a repeat gets the recorded reply', async () => {
    const a = await connect({ port: srv.port });
    await a.login('ib_d', PW);
    const b = await connect({ port: srv.port });
    await b.login('ib_c', PW);
    const rec = recorder(b);
    await b.resume({ epoch: '', seq: 0 });
    await rec.until(3);
    const before = rec.entries.length;
    expect(await a.requestWithKey('key-1', 'send', 'ib_c', 'msg', 'once only')).toEqual(['ok']);
    expect(await a.requestWithKey('key-1', 'send', 'ib_c', 'msg', 'once only')).toEqual(['ok']);
    expect(await a.requestOnce('send', 'ib_c', 'msg', 'another')).toEqual(['ok']);
    await rec.until(rec.entries[before - 1]!.seq + 2);
    await b.request('nop');
    expect(rec.texts().slice(before)).toEqual(['send,ib_d,msg,once only', 'send,ib_d,msg,another']);
    await a.close();
    await b.close();
  });

  it('sends again under the same key after a reconnect, and the message arrives once', async () => {
    const a = await connect({ port: srv.port, reconnect: { initialDelayMs: 20, maxDelayMs: 100 } });
    await a.login('ib_e', PW);
    await a.resume();
    const b = await connect({ port: srv.port });
    await b.login('ib_a', PW);
    const rec = recorder(b);
    const start = (await b.resume()).head;
    const sent: string[] = [];
    a.on('frame', (dir, frame) => dir === 'out' && sent.push(frame.subarray(5).toString()));
    const reply = a.requestOnce('send', 'ib_a', 'msg', 'through a drop');
    a.drop(); // the request may or may not have left: either way it goes again with its key
    expect(await reply).toEqual(['ok']);
    const onceFrames = sent.filter((f) => f.includes(',once,'));
    expect(onceFrames).toHaveLength(2);
    expect(onceFrames[1]!.split(',').slice(2)).toEqual(onceFrames[0]!.split(',').slice(2));
    await b.call('send', 'ib_c', 'msg', 'marker');
    await rec.until(start + 2);
    expect(rec.texts().slice(-2)).toEqual(['send,ib_e,msg,through a drop', 'sent,ib_c,msg,marker']);
    await a.close();
    await b.close();
  });

  it('gives up when the client is closed meanwhile', async () => {
    const a = await connect({ port: srv.port, reconnect: { initialDelayMs: 5000 } });
    await a.login('ib_e', PW);
    const reply = a.requestOnce('send', 'ib_a', 'msg', 'never mind');
    a.drop();
    await once(a, 'close');
    await a.close();
    await expect(reply).rejects.toMatchObject({ name: 'ConnectionClosedError' });
  });
});
