/** PROTOCOL.md section 1 over real sockets: partial frames, pipelining, limits, faults, timeouts. */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startServer, removeDir, type TestServer } from '../helpers/server.ts';
import { RawConnection } from '../helpers/raw.ts';
import { eventually } from '../helpers/eventually.ts';
import { encodeFrame } from '../../src/wire/frame-encoder.ts';
import { formatFields } from '../../src/text/fields.ts';

let srv: TestServer;
const MAX = 100;

beforeAll(async () => {
  srv = await startServer(['--max-request', String(MAX)]);
});

afterAll(async () => {
  await srv.stop();
  removeDir(srv.data);
});

describe('frames', () => {
  it('handles a frame split byte by byte', async () => {
    const c = await RawConnection.open(srv.port);
    const bytes = encodeFrame('req,split,nop');
    const counted = srv.server.core.counters.bytesIn;
    for (let i = 0; i < bytes.length; i++) {
      c.write(bytes.subarray(i, i + 1));
      // one read per byte: the next byte leaves once the server has taken this one
      await eventually(() => expect(srv.server.core.counters.bytesIn).toBe(counted + i + 1), 5000, 1);
    }
    expect(await c.next()).toBe('req,split');
    c.close();
  });

  it('answers 200 pipelined requests in one write, in order', async () => {
    const c = await RawConnection.open(srv.port);
    const requests: Buffer[] = [];
    const expected: string[] = [];
    for (let i = 0; i < 200; i++) {
      if (i % 3 === 0) {
        requests.push(encodeFrame(formatFields(['req', String(i), 'nop'])));
        expected.push(`req,${i}`);
      } else if (i % 3 === 1) {
        requests.push(encodeFrame('nop'));
        expected.push('');
      } else {
        // an asynchronous command between the synchronous ones
        requests.push(encodeFrame(formatFields(['req', String(i), 'register', `pipe${i}`, 'short'])));
        expected.push(`req,${i},error,nonfatal,password_too_short,passwords have at least 8 characters`);
      }
    }
    c.write(Buffer.concat(requests));
    expect(await c.waitFrames(200, 15_000)).toEqual(expected);
    c.close();
  });

  it('accepts a payload of exactly --max-request bytes', async () => {
    const c = await RawConnection.open(srv.port);
    c.write(encodeFrame(`nop,${'x'.repeat(MAX - 4)}`));
    expect(await c.next()).toBe('');
    c.close();
  });

  it('closes with request_too_long at --max-request + 1, without reading the body', async () => {
    const c = await RawConnection.open(srv.port);
    const header = Buffer.alloc(5);
    header.writeUInt32BE(MAX + 1, 0);
    c.write(header); // the body never comes: the server must answer from the header alone
    expect(await c.next()).toMatch(/^error,fatal,request_too_long(,.*)?$/);
    await c.waitClosed();
  });

  it('closes with request_too_long on a 0xFFFFFFFF header at once', async () => {
    const c = await RawConnection.open(srv.port);
    c.write(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    expect(await c.next()).toMatch(/^error,fatal,request_too_long(,.*)?$/);
    await c.waitClosed();
  });

  it('closes with a fatal syntax error when the fifth byte is not 0x00', async () => {
    const c = await RawConnection.open(srv.port);
    c.write(Buffer.from([0, 0, 0, 3, 0x20, 0x6e, 0x6f, 0x70]));
    expect(await c.next()).toMatch(/^error,fatal,syntax(,.*)?$/);
    await c.waitClosed();
  });

  it('answers the frames before a fault, then the fault', async () => {
    const c = await RawConnection.open(srv.port);
    c.write(Buffer.concat([encodeFrame('nop'), Buffer.from([0, 0, 0, 1, 9, 0x41])]));
    expect(await c.nextN(2)).toEqual(['', expect.stringMatching(/^error,fatal,syntax/)]);
    await c.waitClosed();
  });

  it('keeps serving other clients after a fatal fault', async () => {
    const bad = await RawConnection.open(srv.port);
    bad.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0]));
    await bad.waitClosed();
    const good = await RawConnection.open(srv.port);
    expect(await good.ask('nop')).toBe('');
    good.close();
  });
});

describe('timeouts', () => {
  // The sweeper's interval and its clock (performance.now) are on vitest's fake clock from
  // before the server starts: each test moves time to just before and just after a timeout.
  const IDLE_MS = 1200;
  const REQUEST_MS = 400;
  const SWEEP_MS = 100; // a quarter of the shorter timeout (sessions.ts)
  let timed: TestServer;
  beforeAll(async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'performance'] });
    vi.advanceTimersByTime(1000); // performance.now() 0 means "no partial frame" to a link
    timed = await startServer(['--idle-timeout', String(IDLE_MS / 1000), '--request-timeout', String(REQUEST_MS / 1000)]);
  });
  afterAll(async () => {
    await timed.stop();
    vi.useRealTimers();
    removeDir(timed.data);
  });

  const sessions = () => [...timed.server.core.sessions].filter((s) => s.open);

  /** A connection the server has a session for, opened at the current (fake) time. */
  async function connect(): Promise<RawConnection> {
    await eventually(() => expect(sessions()).toHaveLength(0)); // the previous test's connection is gone
    const c = await RawConnection.open(timed.port);
    await eventually(() => expect(sessions()).toHaveLength(1));
    return c;
  }

  it('closes an idle connection with a fatal timeout, not before', async () => {
    const c = await connect();
    vi.advanceTimersByTime(IDLE_MS - 1);
    expect(sessions()).toHaveLength(1);
    vi.advanceTimersByTime(SWEEP_MS);
    expect(sessions()).toHaveLength(0);
    expect(await c.next()).toMatch(/^error,fatal,timeout(,.*)?$/);
    await c.waitClosed();
  });

  it('keepalives hold an idle connection open', async () => {
    const c = await connect();
    for (let i = 0; i < 5; i++) {
      vi.advanceTimersByTime(IDLE_MS - SWEEP_MS);
      expect(await c.ask('')).toBe(''); // answered, so the server saw it
    }
    expect(sessions()).toHaveLength(1); // five times the idle timeout in all
    expect(c.closed).toBe(false);
    c.close();
  });

  it('closes a connection whose frame does not complete within the request timeout', async () => {
    const c = await connect();
    const before = timed.server.core.counters.bytesIn;
    c.write(encodeFrame('nop,abc').subarray(0, 6));
    await eventually(() => expect(timed.server.core.counters.bytesIn).toBe(before + 6));
    vi.advanceTimersByTime(REQUEST_MS - 1);
    expect(sessions()).toHaveLength(1);
    vi.advanceTimersByTime(SWEEP_MS); // long before the idle timeout
    expect(sessions()).toHaveLength(0);
    expect(await c.next()).toMatch(/^error,fatal,timeout,request not completed /);
    await c.waitClosed();
  });
});
