/**
 * Incremental decoder for PROTOCOL.md section 1 frames:
 * uint32 BE length N, a 0x00 byte, then N payload bytes.
 *
 * It never touches a socket and never throws: `read()` hands back the next
 * payload, `undefined` when more bytes are needed, or a `DecodeFault` value
 * once the stream is unusable. The length is checked as soon as the four
 * header bytes are in, so an oversized body is never buffered.
 */

export const HEADER_SIZE = 5;

export type DecodeFault = {
  readonly fault: 'request_too_long' | 'syntax';
  readonly info: string;
};

export class FrameDecoder {
  readonly maxPayload: number;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #need = -1; // payload length of the frame being read, -1 while in the header
  #fault: DecodeFault | undefined;

  constructor(maxPayload: number) {
    this.maxPayload = maxPayload;
  }

  /** Bytes received but not yet handed out as a frame. */
  get pending(): number {
    return this.#buffered;
  }

  get fault(): DecodeFault | undefined {
    return this.#fault;
  }

  push(chunk: Buffer): void {
    if (this.#fault !== undefined || chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
  }

  read(): Buffer | DecodeFault | undefined {
    if (this.#fault !== undefined) return this.#fault;
    if (this.#need < 0) {
      if (this.#buffered < 4) return undefined;
      const n = this.#peekLength();
      if (n > this.maxPayload) {
        return this.#fail('request_too_long', `frame of ${n} bytes exceeds the limit of ${this.maxPayload}`);
      }
      if (this.#buffered < HEADER_SIZE) return undefined;
      if (this.#byteAt(4) !== 0) {
        return this.#fail('syntax', 'the fifth byte of a frame must be 0x00');
      }
      this.#skip(HEADER_SIZE);
      this.#need = n;
    }
    if (this.#buffered < this.#need) return undefined;
    const payload = this.#consume(this.#need);
    this.#need = -1;
    return payload;
  }

  #fail(fault: DecodeFault['fault'], info: string): DecodeFault {
    this.#fault = { fault, info };
    this.#chunks = [];
    this.#buffered = 0;
    return this.#fault;
  }

  #peekLength(): number {
    const first = this.#chunks[0]!;
    if (first.length >= 4) return first.readUInt32BE(0);
    return ((this.#byteAt(0) << 24) | (this.#byteAt(1) << 16) | (this.#byteAt(2) << 8) | this.#byteAt(3)) >>> 0;
  }

  #byteAt(index: number): number {
    let i = index;
    for (const chunk of this.#chunks) {
      if (i < chunk.length) return chunk[i]!;
      i -= chunk.length;
    }
    return -1;
  }

  #skip(n: number): void {
    let left = n;
    while (left > 0) {
      const first = this.#chunks[0]!;
      if (first.length <= left) {
        this.#chunks.shift();
        left -= first.length;
      } else {
        this.#chunks[0] = first.subarray(left);
        left = 0;
      }
    }
    this.#buffered -= n;
  }

  /** A view when the bytes lie in one chunk; a copy only across chunks. */
  #consume(n: number): Buffer {
    this.#buffered -= n;
    const first = this.#chunks[0];
    if (n === 0 || first === undefined) return EMPTY;
    if (first.length === n) {
      this.#chunks.shift();
      return first;
    }
    if (first.length > n) {
      this.#chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let offset = 0;
    while (offset < n) {
      const chunk = this.#chunks[0]!;
      const take = Math.min(chunk.length, n - offset);
      chunk.copy(out, offset, 0, take);
      offset += take;
      if (take === chunk.length) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(take);
    }
    return out;
  }
}

const EMPTY = Buffer.alloc(0);

export function isFault(value: Buffer | DecodeFault | undefined): value is DecodeFault {
  return value !== undefined && !(value instanceof Uint8Array);
}
