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
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }), fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1 }), (payloads, cuts) => {
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
      }),
    );
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
});
