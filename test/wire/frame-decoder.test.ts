import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { FrameDecoder, isFault, type DecodeFault } from '../../src/wire/frame-decoder.ts';
import { encodeFrame, encodeFrames } from '../../src/wire/frame-encoder.ts';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function drain(decoder: FrameDecoder): (string | DecodeFault)[] {
  const out: (string | DecodeFault)[] = [];
  for (;;) {
    const r = decoder.read();
    if (r === undefined) return out;
    if (isFault(r)) return [...out, r];
    out.push(r.toString('hex'));
  }
}

describe('encodeFrame', () => {
  it('writes the length big-endian, a null byte, then UTF-8', () => {
    expect(encodeFrame('ok').toString('hex')).toBe('00000002' + '00' + '6f6b');
    expect(encodeFrame('').toString('hex')).toBe('0000000000');
    expect(encodeFrame('é').toString('hex')).toBe('00000002' + '00' + 'c3a9');
    expect(encodeFrame(Buffer.from([1, 2, 3])).toString('hex')).toBe('0000000300010203');
  });
});

describe('FrameDecoder', () => {
  it('decodes a frame from a hex fixture', () => {
    const d = new FrameDecoder(100);
    d.push(hex('00000005 00 6c6f67696e'));
    expect(drain(d)).toEqual([Buffer.from('login').toString('hex')]);
    expect(d.pending).toBe(0);
  });

  it('decodes an empty frame', () => {
    const d = new FrameDecoder(100);
    d.push(hex('0000000000'));
    expect(drain(d)).toEqual(['']);
  });

  it('decodes many frames in one chunk', () => {
    const d = new FrameDecoder(100);
    d.push(hex('00000001 00 61 00000000 00 00000002 00 6263'));
    expect(drain(d)).toEqual(['61', '', '6263']);
  });

  it('decodes a frame fed one byte at a time', () => {
    const d = new FrameDecoder(100);
    const bytes = hex('00000003 00 616263 00000001 00 64');
    const seen: (string | DecodeFault)[] = [];
    for (const b of bytes) {
      d.push(Buffer.from([b]));
      seen.push(...drain(d));
    }
    expect(seen).toEqual(['616263', '64']);
  });

  it('refuses a length over the limit as soon as the length is known, before the null byte', () => {
    const d = new FrameDecoder(10);
    d.push(hex('0000000b'));
    expect(drain(d)).toEqual([{ fault: 'request_too_long', info: expect.any(String) }]);
  });

  it('accepts exactly the limit and refuses one more', () => {
    const ok = new FrameDecoder(3);
    ok.push(encodeFrame('abc'));
    expect(drain(ok)).toEqual(['616263']);
    const tooLong = new FrameDecoder(3);
    tooLong.push(encodeFrame('abcd'));
    expect(drain(tooLong)[0]).toMatchObject({ fault: 'request_too_long' });
  });

  it('refuses a 0xFFFFFFFF header without buffering the body', () => {
    const d = new FrameDecoder(1 << 20);
    d.push(hex('ffffffff 00'));
    expect(drain(d)[0]).toMatchObject({ fault: 'request_too_long' });
    d.push(Buffer.alloc(1000));
    expect(d.pending).toBe(0);
  });

  it('reports a non-null fifth byte as a syntax fault', () => {
    const d = new FrameDecoder(100);
    d.push(hex('00000001 01 61'));
    expect(drain(d)).toEqual([{ fault: 'syntax', info: expect.any(String) }]);
  });

  it('keeps frames before a fault', () => {
    const d = new FrameDecoder(100);
    d.push(hex('00000001 00 61 00000001 07 62'));
    expect(drain(d)).toEqual(['61', { fault: 'syntax', info: expect.any(String) }]);
  });

  it('returns a view, not a copy, when the frame lies in one chunk', () => {
    const chunk = encodeFrame('hello');
    const d = new FrameDecoder(100);
    d.push(chunk);
    const frame = d.read() as Buffer;
    expect(frame.buffer).toBe(chunk.buffer);
  });

  it('property: encode then decode under any chunking gives the same payloads', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1 }),
        (payloads, cuts) => {
          const stream = encodeFrames(payloads);
          const d = new FrameDecoder(1000);
          const out: string[] = [];
          let offset = 0;
          for (let i = 0; offset < stream.length; i++) {
            const size = cuts[i % cuts.length]!;
            d.push(stream.subarray(offset, offset + size));
            offset += size;
            for (let f = d.read(); f !== undefined; f = d.read()) {
              if (isFault(f)) throw new Error('unexpected fault');
              out.push(Buffer.from(f).toString('hex'));
            }
          }
          expect(out).toEqual(payloads.map((p) => Buffer.from(p).toString('hex')));
          expect(d.pending).toBe(0);
        },
      ),
    );
  });

  it('property: long frames (assembled in a buffer of their own) decode the same under any chunking, mixed with short ones', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 64 * 1024, max: 200 * 1024 })), { minLength: 1, maxLength: 6 }),
        fc.array(fc.integer({ min: 1, max: 90_000 }), { minLength: 1, maxLength: 8 }),
        fc.boolean(),
        (sizes, cuts, owns) => {
          const payloads = sizes.map((n, i) => Buffer.alloc(n, i + 1));
          const stream = encodeFrames(payloads);
          const d = new FrameDecoder(256 * 1024, owns);
          const out: string[] = [];
          let offset = 0;
          for (let i = 0; offset < stream.length; i++) {
            const size = cuts[i % cuts.length]!;
            d.push(Buffer.from(stream.subarray(offset, offset + size))); // a chunk of its own, like a socket read
            offset += size;
            for (let f = d.read(); f !== undefined; f = d.read()) {
              if (isFault(f)) throw new Error('unexpected fault');
              out.push(`${f.length}:${f[0] ?? ''}:${f.at(-1) ?? ''}:${f.every((b) => b === f[0])}`);
            }
          }
          expect(out).toEqual(payloads.map((p) => `${p.length}:${p[0] ?? ''}:${p.at(-1) ?? ''}:true`));
          expect(d.pending).toBe(0);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('frees a half-received long frame on release, and the chunks it copied when it owns them', () => {
    const d = new FrameDecoder(1 << 20, true);
    const head = Buffer.from([0, 0x08, 0, 0, 0]); // 512 KiB announced
    const chunks = [Buffer.concat([head, Buffer.alloc(1000, 1)]), Buffer.alloc(70_000, 2), Buffer.alloc(70_000, 3)];
    for (const c of chunks) d.push(c);
    expect(d.next()).toBe(false);
    expect(d.pending).toBe(141_000);
    expect(chunks[0]!.buffer.byteLength).toBeGreaterThan(0); // may hold earlier frames: kept
    expect(chunks[2]!.length).toBe(70_000); // the caller may still use it until the next push
    d.push(Buffer.alloc(1000, 4));
    expect(chunks[2]!.buffer.byteLength).toBe(0); // copied into the frame's own buffer, then freed
    const before = process.memoryUsage().arrayBuffers;
    d.release();
    expect(before - process.memoryUsage().arrayBuffers).toBeGreaterThanOrEqual(512 * 1024); // at once, no GC needed
    expect(d.pending).toBe(0);
    d.push(encodeFrame('after'));
    expect(d.read()?.toString()).toBe('after');
  });

  it('property: random bytes never throw, and a fault is final', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 50 }), { maxLength: 30 }), fc.integer({ min: 0, max: 100 }), (chunks, max) => {
        const d = new FrameDecoder(max);
        let fault: DecodeFault | undefined;
        for (const c of chunks) {
          d.push(Buffer.from(c));
          for (let f = d.read(); f !== undefined; f = d.read()) {
            if (isFault(f)) {
              fault = f;
              break;
            }
            expect(f.length).toBeLessThanOrEqual(max);
          }
          if (fault !== undefined) {
            expect(d.read()).toBe(fault);
            return;
          }
        }
      }),
    );
  });

  it('inFrame: from the first byte of a frame until it is read, the header alone included', () => {
    const d = new FrameDecoder(1024);
    expect(d.inFrame).toBe(false);
    d.push(Buffer.from([0, 0]));
    expect(d.next()).toBe(false);
    expect(d.inFrame).toBe(true);
    d.push(Buffer.from([0, 2, 0]));
    expect(d.next()).toBe(false);
    expect(d.pending).toBe(0); // the header is consumed: nothing buffered, yet the frame has started
    expect(d.inFrame).toBe(true);
    d.push(Buffer.from('ok'));
    expect(d.next()).toBe(true);
    expect(d.inFrame).toBe(false);
  });
});
