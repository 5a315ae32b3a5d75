/** PROTOCOL.md section 1 over real sockets: partial frames, pipelining, limits, faults, timeouts. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, removeDir, type TestServer } from '../helpers/server.ts';
import { RawConnection } from '../helpers/raw.ts';
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
    for (const b of bytes) {
      c.write(Buffer.from([b]));
      await new Promise((r) => setTimeout(r, 2));
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
  let timed: TestServer;
  beforeAll(async () => {
    timed = await startServer(['--idle-timeout', '1.2', '--request-timeout', '0.4']);
  });
  afterAll(async () => {
    await timed.stop();
    removeDir(timed.data);
  });

  it('closes an idle connection with a fatal timeout', async () => {
    const c = await RawConnection.open(timed.port);
    const started = Date.now();
    expect(await c.next(5000)).toMatch(/^error,fatal,timeout(,.*)?$/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1100);
    await c.waitClosed();
  });

  it('keepalives hold an idle connection open', async () => {
    const c = await RawConnection.open(timed.port);
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setTimeout(r, 400));
      c.write(encodeFrame(''));
    }
    expect(c.frames).not.toContainEqual(expect.stringMatching(/timeout/));
    expect(await c.waitFrames(5)).toEqual(['', '', '', '', '']);
    c.close();
  });

  it('closes a connection whose frame does not complete within the request timeout', async () => {
    const c = await RawConnection.open(timed.port);
    const started = Date.now();
    c.write(encodeFrame('nop,abc').subarray(0, 6));
    expect(await c.next(5000)).toMatch(/^error,fatal,timeout(,.*)?$/);
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(350);
    expect(took).toBeLessThan(1100); // the request timeout, not the idle one
    await c.waitClosed();
  });
});
