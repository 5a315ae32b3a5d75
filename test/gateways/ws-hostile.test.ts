/**
 * Hostile WebSocket clients. A frame trickled a byte per read, a message in
 * many tiny fragments (RFC 6455 allows any split): memory stays the
 * message's own bytes, and the frames are read a share per turn of the
 * event loop, so one such client does not hold the others. Compression is
 * never agreed, so a compressed frame (a zip bomb) is refused unread.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, startServer, type TestServer } from '../helpers/server.ts';
import { clientFrame, RawWs, text } from '../helpers/raw-ws.ts';
import { eventually } from '../helpers/eventually.ts';
import { countPerTurn } from '../helpers/per-turn.ts';
import { Session } from '../../src/core/session.ts';

let srv: TestServer;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

beforeAll(async () => {
  srv = await startServer(['--ws-port', '0']);
});

afterAll(async () => {
  await srv.stop();
  removeDir(srv.data);
});

/** `n` continuation frames of one byte each, masked like any client's (the mask fixed: the payload does not matter here). */
function oneByteFragments(n: number): Buffer {
  const frame = Buffer.from([0x00, 0x81, 1, 2, 3, 4, 0x78 ^ 1]);
  const out = Buffer.allocUnsafe(frame.length * n);
  for (let i = 0; i < n; i++) frame.copy(out, i * frame.length);
  return out;
}

/** Opens a WebSocket, starts a text message and sends `n` more 1-byte fragments, then a ping; resolves once its pong came (every fragment read). */
async function unfinishedMessage(n: number, fragments: Buffer): Promise<RawWs> {
  const ws = await RawWs.open(srv.server.wsPort!);
  expect(ws.status).toBe(101);
  ws.write(text('x', false));
  ws.socket.write(fragments.subarray(0, 7 * n));
  ws.write(clientFrame(9, 'read'));
  await ws.until(() => ws.frames.some((f) => f.opcode === 10) || ws.closed, 60_000);
  expect(ws.texts).toEqual(['pong read']);
  return ws;
}

describe('a frame trickled a byte per read', () => {
  it('holds about its own bytes, not a Buffer per read', async () => {
    const conns = 8;
    const bytes = 20_000;
    const held = await Promise.all(Array.from({ length: conns }, () => RawWs.open(srv.server.wsPort!)));
    const counters = srv.server.core.counters;
    const header = Buffer.from([0x81, 0x80 | 126, 0xff, 0xff, 1, 2, 3, 4]); // a 65,535-byte text frame
    for (const ws of held) ws.socket.setNoDelay(true).write(header);
    await eventually(() => expect(counters.bytesIn).toBeGreaterThanOrEqual(conns * header.length));
    gc();
    const before = process.memoryUsage().heapUsed;
    const one = Buffer.from('a');
    for (let i = 0; i < bytes; i++) {
      // each byte waits for the server to have read the previous ones: one read per byte
      const target = counters.bytesIn + conns;
      for (const ws of held) ws.socket.write(one);
      while (counters.bytesIn < target) await new Promise((r) => setImmediate(r));
    }
    gc();
    // a Buffer per read was about 100 bytes of heap each: 16 MB here
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(4 * 1024 * 1024);
    for (const ws of held) expect(ws.closed).toBe(false);
    for (const ws of held) ws.close();
  }, 120_000);
});

describe('a message in 1-byte fragments', () => {
  it('holds about its own bytes, not an object per fragment, and completes intact at --max-request', async () => {
    const n = 300_000;
    const fragments = oneByteFragments(n);
    const conns = 4;
    gc();
    const before = process.memoryUsage();
    const held = await Promise.all(Array.from({ length: conns }, () => unfinishedMessage(n, fragments)));
    gc();
    const after = process.memoryUsage();
    // a Buffer object per fragment was about 100 bytes of heap each: 120 MB here
    expect(after.heapUsed - before.heapUsed).toBeLessThan(20 * 1024 * 1024);
    for (const ws of held) ws.close();

    // exactly --max-request (1 MiB) in 1-byte fragments is one message; one byte more is refused
    const max = 1024 * 1024;
    const whole = await RawWs.open(srv.server.wsPort!);
    whole.write(text('x', false));
    whole.socket.write(oneByteFragments(max - 2));
    whole.write(clientFrame(0, 'x'));
    await whole.until(() => whole.frames.length > 0, 60_000);
    expect(whole.texts[0]).toMatch(/^error,nonfatal,command_not_found,/);
    whole.write(text('x', false));
    whole.socket.write(oneByteFragments(max - 1));
    whole.write(clientFrame(0, 'x'));
    await whole.until(() => whole.closed, 60_000);
    expect(whole.texts.slice(1)).toEqual([expect.stringMatching(/^error,fatal,request_too_long,message of 1048577 bytes/), 'close 1008']);
  }, 120_000);

  it('is read 1024 frames a turn of the event loop, whatever one read holds', async () => {
    // 50,000 pipelined `nop` messages (450 KB): one read of the server held thousands of them
    const n = 50_000;
    const ws = await RawWs.open(srv.server.wsPort!);
    const frame = clientFrame(1, 'nop');
    const all = Buffer.allocUnsafe(frame.length * n);
    for (let i = 0; i < n; i++) frame.copy(all, i * frame.length);
    const received = countPerTurn(Session.prototype, 'receive');
    try {
      ws.write(all);
      await ws.until(() => ws.frames.length >= n || ws.closed, 60_000);
    } finally {
      received.stop();
    }
    ws.close();
    expect(received.total()).toBe(n);
    // before: every frame of a read at once (node reads up to 32 chunks of 64 KiB in one go)
    expect(received.max()).toBeLessThanOrEqual(1024);
  }, 120_000);
});

describe('permessage-deflate (RFC 7692)', () => {
  it('is never agreed; a compressed frame sent anyway closes with 1002, unread', async () => {
    const ws = await RawWs.open(srv.server.wsPort!, { headers: { 'Sec-WebSocket-Extensions': 'permessage-deflate; client_max_window_bits' } });
    expect(ws.status).toBe(101);
    expect(ws.head.toLowerCase()).not.toContain('sec-websocket-extensions');
    const bomb = text(Buffer.alloc(100_000)); // what deflate would make of gigabytes of zeros, in size
    bomb[0] = bomb[0]! | 0x40; // RSV1: "compressed"
    ws.write(bomb);
    await ws.until(() => ws.closed, 5000);
    expect(ws.texts).toEqual(['close 1002']);
  });
});
