/**
 * Incremental decoder for PROTOCOL.md section 1 frames:
 * uint32 BE length N, a 0x00 byte, then N payload bytes.
 *
 * It never touches a socket and never throws: `read()` hands back the next
 * payload, `undefined` when more bytes are needed, or a `DecodeFault` value
 * once the stream is unusable. The length is checked as soon as the four
 * header bytes are in, so an oversized body is never buffered. `next()` is
 * the allocation-free form the server's hot path uses.
 *
 * A long frame that arrives in pieces is copied, piece by piece, into one
 * buffer of its own, allocated when its length is known: the decoder then
 * holds one buffer per connection rather than every read's chunk, and
 * `release()` (the connection is gone) hands that buffer's memory back at
 * once instead of at some later garbage collection, which an idle server
 * may not run for a long time. A decoder that owns the chunks it is given
 * (`ownsChunks`: the server's socket reads, which nothing else holds) also
 * frees each chunk it has copied, so the next read reuses its memory; it
 * does so at the next push() or release(), so the caller may still use a
 * chunk until then.
 */

export const HEADER_SIZE = 5;

export type DecodeFault = {
  readonly fault: 'request_too_long' | 'syntax';
  readonly info: string;
};

const EMPTY = Buffer.alloc(0);

/** Frames at least this long are assembled in a buffer of their own when they arrive in pieces. */
const ASSEMBLE_MIN = 64 * 1024;
/**
 * Such a buffer is allocated at least this large: glibc then serves it with
 * mmap (npm start sets MALLOC_MMAP_THRESHOLD_ to 1 MiB), so freeing it
 * returns the memory to the system; the pages a shorter frame never
 * touches are never committed.
 */
const ASSEMBLY_ALLOC = 1024 * 1024;

export class FrameDecoder {
  readonly maxPayload: number;
  /** After next() returned true: the frame is frameBuffer[frameStart..frameEnd), valid until the next call. */
  frameBuffer: Buffer = EMPTY;
  frameStart = 0;
  frameEnd = 0;
  #chunks: Buffer[] = [];
  #offset = 0; // read position in #chunks[0]
  #buffered = 0; // unread bytes in all chunks
  #need = -1; // payload length of the frame being read, -1 while in the header
  #fault: DecodeFault | undefined;
  /** The long frame being assembled (then #chunks is empty until it is complete), and its bytes so far. */
  #assembly: Buffer | undefined;
  #filled = 0;
  /** Owned chunks copied into an assembly, freed at the next push() or release(). */
  #spent: Buffer[] = [];

  readonly #ownsChunks: boolean;

  constructor(maxPayload: number, ownsChunks = false) {
    this.maxPayload = maxPayload;
    this.#ownsChunks = ownsChunks;
  }

  /** Bytes received but not yet handed out as a frame. */
  get pending(): number {
    return this.#buffered + this.#filled;
  }

  /**
   * True from a frame's first byte until it is handed out: also after its
   * header was read while no body byte has come yet (pending is 0 then), so
   * a header alone counts as a started frame for the request timeout.
   */
  get inFrame(): boolean {
    return this.#buffered > 0 || this.#need >= 0 || this.#filled > 0;
  }

  get fault(): DecodeFault | undefined {
    return this.#fault;
  }

  push(chunk: Buffer): void {
    if (this.#spent.length > 0) this.#freeSpent();
    if (this.#fault !== undefined || chunk.length === 0) return;
    const assembly = this.#assembly;
    if (assembly !== undefined && this.#filled < this.#need) {
      const take = Math.min(chunk.length, this.#need - this.#filled);
      chunk.copy(assembly, this.#filled, 0, take);
      this.#filled += take;
      if (take === chunk.length) {
        this.#spend(chunk);
        return;
      }
      chunk = chunk.subarray(take); // the start of the next frame
    }
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
  }

  /** True with the next frame in frameBuffer/frameStart/frameEnd; false when more bytes are needed or on a fault. */
  next(): boolean {
    if (this.#fault !== undefined || !this.#header()) return false;
    const n = this.#need;
    if (this.#assembly !== undefined) {
      if (this.#filled < n) return false;
      this.frameBuffer = this.#assembly;
      this.frameStart = 0;
      this.frameEnd = n;
      this.#assembly = undefined;
      this.#filled = 0;
      this.#need = -1;
      return true;
    }
    if (this.#buffered < n) {
      if (n >= ASSEMBLE_MIN) this.#assemble(n);
      return false;
    }
    this.#need = -1;
    const first = this.#chunks[0];
    if (n === 0 || first === undefined) {
      this.frameBuffer = EMPTY;
      this.frameStart = this.frameEnd = 0;
    } else if (first.length - this.#offset >= n) {
      this.frameBuffer = first;
      this.frameStart = this.#offset;
      this.frameEnd = this.#offset + n;
      this.#skip(n);
    } else {
      this.frameBuffer = this.#copy(n);
      this.frameStart = 0;
      this.frameEnd = n;
    }
    return true;
  }

  read(): Buffer | DecodeFault | undefined {
    if (this.next()) return this.frameBuffer.subarray(this.frameStart, this.frameEnd);
    return this.#fault;
  }

  /** Reads and checks the header if the frame's length is not known yet; false when not ready or faulty. */
  #header(): boolean {
    if (this.#need >= 0) return true;
    if (this.#buffered < 4) return false;
    const n = this.#peekLength();
    if (n > this.maxPayload) {
      this.#fail('request_too_long', `frame of ${n} bytes exceeds the limit of ${this.maxPayload}`);
      return false;
    }
    if (this.#buffered < HEADER_SIZE) return false;
    if (this.#byteAt(4) !== 0) {
      this.#fail('syntax', 'the fifth byte of a frame must be 0x00');
      return false;
    }
    this.#skip(HEADER_SIZE);
    this.#need = n;
    return true;
  }

  /**
   * Drops everything buffered (the connection is closed). The memory of a
   * frame being assembled is freed now: its buffer was never handed out, so
   * nothing else can hold it, and detaching it frees its backing store.
   */
  release(): void {
    const assembly = this.#assembly;
    this.#assembly = undefined;
    this.#filled = 0;
    this.#need = -1;
    this.#chunks = [];
    this.#offset = 0;
    this.#buffered = 0;
    this.#freeSpent();
    if (assembly !== undefined) (assembly.buffer as ArrayBuffer).transfer(0);
  }

  #fail(fault: DecodeFault['fault'], info: string): void {
    this.release();
    this.#fault = { fault, info };
  }

  /** A chunk copied and no longer needed: freed later if it is ours and backed by a buffer of its own. */
  #spend(chunk: Buffer): void {
    if (this.#ownsChunks && chunk.byteOffset === 0 && chunk.buffer.byteLength === chunk.length) this.#spent.push(chunk);
  }

  #freeSpent(): void {
    for (const chunk of this.#spent) (chunk.buffer as ArrayBuffer).transfer(0); // detached: its memory is freed now
    this.#spent = [];
  }

  /** Moves the frame's bytes so far (all that is buffered) into a buffer of its own, which push() fills. */
  #assemble(n: number): void {
    const filled = this.#buffered;
    const assembly = Buffer.allocUnsafeSlow(Math.max(n, ASSEMBLY_ALLOC));
    let at = 0;
    for (let i = 0; i < this.#chunks.length; i++) {
      const chunk = this.#chunks[i]!;
      at += chunk.copy(assembly, at, i === 0 ? this.#offset : 0);
      // the first chunk may hold earlier frames, handed out and maybe still queued; the others hold this frame only
      if (i > 0) this.#spend(chunk);
    }
    this.#chunks = [];
    this.#offset = 0;
    this.#buffered = 0;
    this.#assembly = assembly;
    this.#filled = filled;
  }

  #peekLength(): number {
    const first = this.#chunks[0]!;
    if (first.length - this.#offset >= 4) return first.readUInt32BE(this.#offset);
    return ((this.#byteAt(0) << 24) | (this.#byteAt(1) << 16) | (this.#byteAt(2) << 8) | this.#byteAt(3)) >>> 0;
  }

  #byteAt(index: number): number {
    let i = index + this.#offset;
    for (const chunk of this.#chunks) {
      if (i < chunk.length) return chunk[i]!;
      i -= chunk.length;
    }
    return -1;
  }

  #skip(n: number): void {
    this.#buffered -= n;
    let left = n;
    while (left > 0) {
      const rest = this.#chunks[0]!.length - this.#offset;
      if (rest > left) {
        this.#offset += left;
        return;
      }
      left -= rest;
      this.#chunks.shift();
      this.#offset = 0;
    }
  }

  /** A frame that spans chunks: the one place bytes are copied. */
  #copy(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[0]!;
      const take = Math.min(chunk.length - this.#offset, n - filled);
      chunk.copy(out, filled, this.#offset, this.#offset + take);
      filled += take;
      this.#skip(take);
    }
    return out;
  }
}

export function isFault(value: Buffer | DecodeFault | undefined): value is DecodeFault {
  return value !== undefined && !(value instanceof Uint8Array);
}
