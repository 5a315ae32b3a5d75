/** --max-outbound bounds everything the server writes on a WebSocket, its pongs included. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, startServer, type TestServer } from '../helpers/server.ts';
import { eventually } from '../helpers/eventually.ts';
import { clientFrame, RawWs } from '../helpers/raw-ws.ts';

const BOUND = 64 * 1024;
let srv: TestServer;

beforeAll(async () => {
  srv = await startServer(['--ws-port', '0', '--max-outbound', String(BOUND)]);
});

afterAll(async () => {
  await srv.stop();
  removeDir(srv.data);
});

describe('pongs and --max-outbound', () => {
  it('cuts as slow_consumer a client that pings without reading, instead of queueing its pongs without bound', async () => {
    const ws = await RawWs.open(srv.server.wsPort!);
    expect(ws.status).toBe(101);
    ws.socket.pause(); // never reads: every pong stays unsent once the kernel's buffers are full
    const pings = Buffer.concat(Array.from({ length: 1000 }, () => clientFrame(9, 'p'.repeat(125))));
    const session = [...srv.server.core.sessions].find((s) => s.link.transport === 'ws')!;
    let most = 0;
    // 32 MB of pings, far past any socket buffer; the writes stop once the server cuts us
    for (let i = 0; i < 256 && !ws.socket.destroyed && !ws.socket.writableEnded; i++) {
      most = Math.max(most, session.link.pendingBytes());
      if (!ws.socket.write(pings)) {
        await new Promise<void>((r) => {
          ws.socket.once('drain', r);
          ws.socket.once('close', r);
        });
      }
      if (srv.server.core.counters.slowConsumers > 0) break;
    }
    await eventually(() => expect(srv.server.core.counters.slowConsumers).toBe(1), 10_000);
    expect(most).toBeLessThanOrEqual(BOUND + 200);
    ws.socket.resume();
    await ws.until(() => ws.closed, 10_000);
    const last = ws.frames.filter((f) => f.opcode === 1).at(-1);
    expect(last?.payload.toString()).toMatch(/^error,fatal,slow_consumer,\d+$/);
    expect(ws.texts.at(-1)).toBe('close 1008');
  });
});
