/**
 * PROTOCOL.md section 1 and the README's "Security and limits", read as a
 * hostile client would: the edges of a frame that the other hardening files
 * leave out (a header that arrives alone, a header that never finishes).
 */
import { describe, expect, it } from 'vitest';
import { encodeFrame } from '../../src/wire/frame-encoder.ts';
import { eventually } from '../helpers/eventually.ts';
import { removeDir, startServer } from '../helpers/server.ts';
import { serverFixture } from '../helpers/users.ts';
import { RawConnection } from '../helpers/raw.ts';

// a short request timeout and a long idle one, so the two faults cannot be confused;
// a small outbound bound, so a client that does not read is held back after a few replies
const fx = serverFixture(['--request-timeout', '1', '--idle-timeout', '60', '--max-outbound', '65536']);

const timeoutFrame = /^error,fatal,timeout(,.*)?$/;

describe('a frame started but not finished within the request timeout', () => {
  it('counts a complete header with no body byte yet as a started frame', async () => {
    const c = await fx.open();
    c.write(Buffer.from([0, 0, 0, 3, 0])); // "3 bytes follow", and they never do
    // before: nothing was buffered once the header was read, so only the idle timeout (60 s) ended it
    expect(await c.next(4000)).toMatch(timeoutFrame);
    await c.waitClosed();
  });

  it('counts a header cut short, before or after its length bytes', async () => {
    for (const head of [[0, 0], [0, 0, 0, 3]]) {
      const c = await fx.open();
      c.write(Buffer.from(head));
      expect(await c.next(4000)).toMatch(timeoutFrame);
      await c.waitClosed();
    }
  });

  it('starts counting at the header that follows a complete frame in the same read', async () => {
    const c = await fx.open();
    c.write(Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 9, 0])); // a keepalive, then the header of a frame that never comes
    expect(await c.next()).toBe('');
    expect(await c.next(4000)).toMatch(timeoutFrame);
    await c.waitClosed();
  });

  it('does not touch a connection that finished its frames, however quiet', async () => {
    const quiet = await fx.open();
    quiet.write(Buffer.from([0, 0, 0, 3, 0]));
    const idle = await fx.open();
    idle.write(Buffer.from([0, 0, 0, 3, 0, 0x6e, 0x6f, 0x70])); // nop, complete
    expect(await idle.next()).toBe('');
    await quiet.waitClosed(4000); // the witness: a sweep has passed
    expect(await idle.ask('nop')).toBe('');
  });
});

describe('a client that pipelines without reading (README: paused, never cut, gets every reply)', () => {
  it('gets every reply once it reads, with --max-outbound under the socket highWaterMark (64 KiB)', async () => {
    const c = await fx.open();
    c.socket.pause();
    const count = 60_000;
    c.socket.write(Buffer.concat(Array.from({ length: count }, () => encodeFrame('commands'))));
    await eventually(() => expect([...fx.srv.server.core.sessions].some((s) => !s.reading)).toBe(true));
    c.socket.resume();
    // before: held back at 32 KiB unsent, the session waited for a socket 'drain' that Node emits only past 64 KiB
    c.send('nop');
    expect((await c.waitFrames(count + 1, 15_000))[count]).toBe('');
  });

  it('is not timed out while the server holds its requests back, however long past the request timeout', async () => {
    const c = await fx.open();
    c.socket.pause(); // reads nothing
    // 13 bytes a frame, about 330 a reply: the server's reads end inside a frame (13 does not divide them), so
    // one is half-read when it stops reading; the replies outgrow what the kernel's buffers take
    const one = encodeFrame('commands');
    const count = 60_000;
    c.socket.write(Buffer.concat(Array.from({ length: count }, () => one)));
    const held = () => [...fx.srv.server.core.sessions].some((s) => !s.reading);
    await eventually(() => expect(held()).toBe(true));
    // witness: a header alone, sent once the other is held, is cut at the request timeout; a sweep has then passed
    // over the held connection more than the request timeout after its hold began
    const w = await fx.open();
    w.write(Buffer.from([0, 0, 0, 3, 0]));
    expect(await w.next(4000)).toMatch(/^error,fatal,timeout(,.*)?$/);
    expect(held()).toBe(true); // before: cut with request not completed within 1 s, its frames unread on our side
    c.socket.resume();
    const replies = await c.waitFrames(count, 20_000);
    expect(replies.every((r) => r.startsWith('commands,'))).toBe(true);
    c.send('nop');
    expect((await c.waitFrames(count + 1))[count]).toBe('');
  });

  it('is cut once it has read none of its replies for the idle timeout', async () => {
    const own = await startServer(['--idle-timeout', '1', '--request-timeout', '1', '--max-outbound', '65536']);
    try {
      const c = await RawConnection.open(own.port);
      c.socket.pause();
      c.socket.write(Buffer.concat(Array.from({ length: 60_000 }, () => encodeFrame('commands'))));
      const sessions = () => [...own.server.core.sessions];
      await eventually(() => expect(sessions().some((s) => !s.reading)).toBe(true));
      // held, and never reading: the idle timeout still ends it (a held client is not kept forever)
      await eventually(() => expect(sessions()).toHaveLength(0), 6000);
      c.close();
    } finally {
      await own.stop();
      removeDir(own.data);
    }
  });
});

