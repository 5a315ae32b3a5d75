/**
 * Fuzzing a real server connection with long random and mutated byte
 * streams: every frame back is well formed, a close comes after a fatal
 * error tuple, no stack trace leaks, and other clients are still served.
 * `npm run fuzz` runs it longer (FUZZ_RUNS).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import net from 'node:net';
import { removeDir, startServer, type TestServer } from '../helpers/server.ts';
import { RawConnection } from '../helpers/raw.ts';
import { encodeFrame } from '../../src/wire/frame-encoder.ts';
import { FrameDecoder, isFault } from '../../src/wire/frame-decoder.ts';
import { formatFields, parseFields, isFieldsFault } from '../../src/text/fields.ts';
import { errorCatalogue } from '../../src/core/errors.ts';

const RUNS = Number(process.env.FUZZ_RUNS ?? 25);
const MAX = 2048;
let srv: TestServer;

beforeAll(async () => {
  srv = await startServer(['--max-request', String(MAX), '--request-timeout', '0.3', '--max-connections-per-ip', '1000']);
  const c = await RawConnection.open(srv.port);
  expect(await c.ask('register', 'fuzzy', 'password1')).toBe('ok');
  c.close();
}, 30_000);

afterAll(async () => {
  await srv.stop();
  removeDir(srv.data);
});

const COMMANDS = [
  'nop',
  'req',
  'register',
  'login',
  'whoami',
  'send',
  'join',
  'leave',
  'say',
  'rooms',
  'members',
  'history',
  'friend_request',
  'friends',
  'presence',
  'typing',
  'version',
  'commands',
  'NOP',
  '',
];
const fieldText = fc.string({ unit: fc.constantFrom('a', 'b', ',', '\\', ' ', 'é', '0', '1', '-', 'fuzzy', 'password1', 'last', '\u0000'), maxLength: 12 });

const requestFrame = fc
  .tuple(fc.constantFrom(...COMMANDS), fc.array(fieldText, { maxLength: 5 }), fc.boolean())
  .map(([cmd, args, wrap]) => encodeFrame(formatFields(wrap ? ['req', 'f', cmd, ...args] : [cmd, ...args])));

const mutated = fc.tuple(requestFrame, fc.nat(), fc.integer({ min: 0, max: 255 })).map(([frame, at, byte]) => {
  const copy = Buffer.from(frame);
  copy[at % copy.length] = byte;
  return copy;
});

const oddFrames = fc.oneof(
  fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)), // raw garbage
  fc.uint8Array({ maxLength: 40 }).map((b) => encodeFrame(Buffer.from(b))), // random payload bytes, often invalid UTF-8
  fc.integer({ min: 0, max: 0xffffffff }).map((n) => {
    const h = Buffer.alloc(5);
    h.writeUInt32BE(n, 0);
    return h;
  }),
  fc.constant(Buffer.from([0, 0, 0, 0, 0])),
  fc.constant(encodeFrame('nop,x\\')),
);

const stream = fc.array(fc.oneof({ weight: 4, arbitrary: requestFrame }, { weight: 2, arbitrary: mutated }, { weight: 1, arbitrary: oddFrames }), {
  minLength: 1,
  maxLength: 40,
});

const REPLY_WORDS = new Set([
  'ok',
  'req',
  'user',
  'error',
  'send',
  'room',
  'said',
  'rooms',
  'members',
  'history',
  'friends',
  'friend',
  'friend_requests',
  'presence',
  'version',
  'commands',
  '',
]);

const END = 'req,fuzz-end,nop';

/**
 * What the server will make of `bytes` (PROTOCOL.md section 1, worked out
 * here independently of the decoder): either it closes (a length over MAX
 * or a fifth byte not 0x00), or, after `fill` zero bytes that complete the
 * frame the stream stops inside of, it waits at a frame boundary.
 */
function completion(bytes: Buffer): { closes: boolean; fill: Buffer } {
  const zeros = (n: number) => Buffer.alloc(n);
  for (let at = 0; ; ) {
    const left = bytes.length - at;
    if (left === 0) return { closes: false, fill: zeros(0) };
    if (left < 4) {
      // zeros finish the header: its length is then the bytes given followed by zeros
      const head = zeros(4);
      bytes.copy(head, 0, at);
      const n = head.readUInt32BE(0);
      return n > MAX ? { closes: true, fill: zeros(4 - left) } : { closes: false, fill: zeros(4 - left + 1 + n) };
    }
    const n = bytes.readUInt32BE(at);
    if (n > MAX) return { closes: true, fill: zeros(0) };
    if (left === 4) return { closes: false, fill: zeros(1 + n) };
    if (bytes[at + 4] !== 0) return { closes: true, fill: zeros(0) };
    if (left < 5 + n) return { closes: false, fill: zeros(5 + n - left) };
    at += 5 + n;
  }
}

/**
 * Writes bytes (completed to a frame boundary), then a last request, and
 * collects frames until its reply (requests are answered in order, so every
 * other frame came before it) or until the server closes.
 */
function exchange(bytes: Buffer): Promise<{ frames: string[]; closed: boolean; badFrame: string | undefined; expectClose: boolean }> {
  const { closes, fill } = completion(bytes);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port: srv.port, host: '127.0.0.1' });
    const decoder = new FrameDecoder(64 * 1024 * 1024);
    const frames: string[] = [];
    let badFrame: string | undefined;
    const guard = setTimeout(() => reject(new Error(`neither the last reply nor a close came; frames: ${JSON.stringify(frames)}`)), 10_000);
    const finish = (closed: boolean) => {
      clearTimeout(guard);
      socket.destroy();
      resolve({ frames, closed, badFrame, expectClose: closes });
    };
    socket.on('connect', () => {
      socket.write(Buffer.concat([bytes, fill, closes ? Buffer.alloc(0) : encodeFrame(END)]));
    });
    socket.on('data', (chunk: Buffer) => {
      decoder.push(chunk);
      for (let f = decoder.read(); f !== undefined; f = decoder.read()) {
        if (isFault(f)) {
          badFrame = f.info;
          break;
        }
        const frame = f.toString('utf8');
        if (frame === 'req,fuzz-end') return finish(false);
        frames.push(frame);
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => finish(true));
  });
}

function checkFrame(frame: string): void {
  const fields = parseFields(frame);
  expect(isFieldsFault(fields)).toBe(false);
  if (isFieldsFault(fields)) return;
  expect(REPLY_WORDS.has(fields[0]!)).toBe(true);
  const error = fields[0] === 'error' ? fields : fields[0] === 'req' && fields[2] === 'error' ? fields.slice(2) : undefined;
  if (error !== undefined) {
    expect(['fatal', 'nonfatal']).toContain(error[1]);
    expect(errorCatalogue().has(error[2]!)).toBe(true);
    expect(error[2]).not.toBe('unhandled');
  }
  expect(frame).not.toMatch(/\n\s+at /); // no stack trace
}

describe('fuzzing a live connection', () => {
  it('answers every stream with well-formed frames or a fatal close, and keeps serving others', async () => {
    await fc.assert(
      fc.asyncProperty(stream, async (parts) => {
        const { frames, closed, badFrame, expectClose } = await exchange(Buffer.concat(parts));
        expect(badFrame).toBeUndefined();
        for (const f of frames) checkFrame(f);
        expect(closed, `closed: ${JSON.stringify(frames.slice(-3))}`).toBe(expectClose);
        if (closed) expect(frames.at(-1)).toMatch(/^error,fatal,(request_too_long|syntax),/);
        const other = await RawConnection.open(srv.port);
        expect(await other.ask('nop')).toBe('');
        other.close();
      }),
      { numRuns: RUNS },
    );
  }, 600_000);
});
