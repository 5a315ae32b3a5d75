/**
 * RFC 6455 section 5 framing, server side: reads the client's frames
 * (masked, maybe fragmented, with control frames between fragments) and
 * builds the server's control frames. Text frames out are OutFrame.wsBytes.
 * Owning this (rather than a library's socket) is what lets the transport
 * see a half-sent message (request timeout), keep replies before its Close,
 * and bound a message by `--max-request` before buffering it.
 */
import { isUtf8 } from 'node:buffer';

export type WsEvent =
  | { readonly kind: 'message'; readonly data: Buffer; readonly binary: boolean }
  | { readonly kind: 'ping'; readonly data: Buffer }
  | { readonly kind: 'pong' }
  /** `code` undefined: the Close carried no status (1005). */
  | { readonly kind: 'close'; readonly code: number | undefined };

/** Why the connection must end: a protocol violation (1002), invalid UTF-8 (1007), or a message over the limit. */
export type WsFault = { readonly code: 1002 | 1007; readonly reason: string } | { readonly code: 'too_long'; readonly size: number };

type Header = { readonly fin: boolean; readonly opcode: number; readonly mask: Buffer; readonly length: number };

const EMPTY = Buffer.alloc(0);
/**
 * Reads shorter than this are copied into a shared block of BLOCK bytes
 * rather than kept as they came: a frame trickled a byte per TCP segment
 * otherwise held a Buffer and its own allocation per byte (about 70 bytes
 * of memory per byte received: 50 such connections took 180 MB in 19 s).
 */
const SMALL_READ = 1024;
const BLOCK = 16 * 1024;

/** Close codes a peer may send (RFC 6455 section 7.4, and the IANA registry up to 1014). */
export function validCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

export class WsFrameReader {
  readonly #max: number;
  #chunks: Buffer[] = [];
  #buffered = 0;
  /** Where small reads are gathered (see SMALL_READ), and how much of it is used. */
  #block: Buffer | undefined;
  #blockUsed = 0;
  #header: Header | undefined;
  /**
   * The opcode of a fragmented message in progress (0: none), and its
   * fragments so far copied into one buffer that grows by doubling (up to
   * `max`). Not a list of the fragments: a message of 1-byte fragments
   * would hold a Buffer object (about 100 bytes) per byte received, and pin
   * every chunk a fragment came in; 20 such connections took 2 GB.
   */
  #messageOpcode = 0;
  #fragments: Buffer | undefined;
  #fragmentBytes = 0;
  fault: WsFault | undefined;
  /**
   * Frames `next()` may still read (it returns undefined at 0, with frames
   * left buffered): the owner refills it each turn of the event loop, so a
   * read of thousands of tiny frames (fragments, pings) is worked off over
   * several turns instead of holding every other connection meanwhile.
   */
  frameBudget = Infinity;

  /** `max`: the largest message, in bytes, across all its fragments. */
  constructor(max: number) {
    this.#max = max;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0 || this.fault !== undefined) return;
    const nothingHeld = this.#buffered === 0;
    this.#buffered += chunk.length;
    // a read that starts with nothing held is nearly always whole frames, read and let go at once:
    // copying it would only cost (the common case); the bytes that trickle in after it are gathered
    if (chunk.length >= SMALL_READ || nothingHeld) {
      this.#chunks.push(chunk);
      return;
    }
    const chunks = this.#chunks;
    let block = this.#block;
    const last = chunks.at(-1);
    // the last buffered bytes end where the block's free space starts: extend them in place
    if (block !== undefined && last !== undefined && last.buffer === block.buffer && last.byteOffset + last.length === block.byteOffset + this.#blockUsed) {
      if (this.#blockUsed + chunk.length <= block.length) {
        chunk.copy(block, this.#blockUsed);
        this.#blockUsed += chunk.length;
        chunks[chunks.length - 1] = Buffer.from(block.buffer, last.byteOffset, last.length + chunk.length);
        return;
      }
    }
    if (block === undefined || this.#blockUsed + chunk.length > block.length) {
      block = this.#block = Buffer.allocUnsafeSlow(BLOCK);
      this.#blockUsed = 0;
    }
    chunk.copy(block, this.#blockUsed);
    chunks.push(block.subarray(this.#blockUsed, this.#blockUsed + chunk.length));
    this.#blockUsed += chunk.length;
  }

  /** True when `next()` stopped for the frame budget with whole frames maybe still buffered. */
  get heldBack(): boolean {
    return this.frameBudget <= 0 && this.#buffered > 0 && this.fault === undefined;
  }

  /** True while part of a frame or of a fragmented message is held. */
  get pending(): boolean {
    return this.#buffered > 0 || this.#header !== undefined || this.#messageOpcode !== 0;
  }

  /** The next complete event, or undefined (more bytes needed, or `fault` is set). */
  next(): WsEvent | undefined {
    while (this.fault === undefined && this.frameBudget > 0) {
      if (this.#header === undefined && !this.#readHeader()) return undefined;
      const header = this.#header!;
      if (this.#buffered < header.length) return undefined;
      this.#header = undefined;
      this.frameBudget--;
      const payload = this.#take(header.length);
      unmask(payload, header.mask);
      const event = this.#frame(header, payload);
      if (event !== undefined) return event;
    }
    return undefined;
  }

  #fail(code: 1002 | 1007, reason: string): false {
    this.fault = { code, reason };
    this.#chunks = [];
    this.#block = undefined;
    this.#fragments = undefined;
    return false;
  }

  #readHeader(): boolean {
    if (this.#buffered < 2) return false;
    const start = this.#peek(2);
    const fin = (start[0]! & 0x80) !== 0;
    const opcode = start[0]! & 0x0f;
    const short = start[1]! & 0x7f;
    // checked as soon as the first two bytes are in, so a bad frame never waits for its length
    if ((start[0]! & 0x70) !== 0) return this.#fail(1002, 'reserved bits set (no extension was agreed)');
    if ((start[1]! & 0x80) === 0) return this.#fail(1002, 'client frames must be masked');
    if (opcode >= 8) {
      if (opcode > 10) return this.#fail(1002, `unknown control opcode ${opcode}`);
      if (!fin) return this.#fail(1002, 'fragmented control frame');
      if (short > 125) return this.#fail(1002, 'control frame over 125 bytes');
    } else {
      if (opcode > 2) return this.#fail(1002, `unknown data opcode ${opcode}`);
      if (opcode === 0 && this.#messageOpcode === 0) return this.#fail(1002, 'continuation frame without a message');
      if (opcode !== 0 && this.#messageOpcode !== 0) return this.#fail(1002, 'new message inside a fragmented one');
    }
    const size = 2 + (short === 126 ? 2 : short === 127 ? 8 : 0) + 4;
    if (this.#buffered < size) return false;
    const head = this.#take(size);
    let length = short;
    if (short === 126) length = head.readUInt16BE(2);
    else if (short === 127) {
      const high = head.readUInt32BE(2);
      if (high >= 0x80000000) return this.#fail(1002, 'payload length with its top bit set');
      length = high * 2 ** 32 + head.readUInt32BE(6);
    }
    if (opcode < 8 && this.#fragmentBytes + length > this.#max) {
      this.fault = { code: 'too_long', size: this.#fragmentBytes + length };
      this.#chunks = [];
      this.#block = undefined;
      this.#fragments = undefined;
      return false;
    }
    // a copy: the mask must outlive the chunk it came in
    this.#header = { fin, opcode, mask: Buffer.from(head.subarray(size - 4, size)), length };
    return true;
  }

  #frame(header: Header, payload: Buffer): WsEvent | undefined {
    switch (header.opcode) {
      case 8: {
        if (payload.length === 0) return { kind: 'close', code: undefined };
        if (payload.length === 1) return void this.#fail(1002, 'close frame with a 1-byte body');
        const code = payload.readUInt16BE(0);
        if (!validCloseCode(code)) return void this.#fail(1002, `invalid close code ${code}`);
        if (!isUtf8(payload.subarray(2))) return void this.#fail(1007, 'close reason is not valid UTF-8');
        return { kind: 'close', code };
      }
      case 9:
        return { kind: 'ping', data: payload };
      case 10:
        return { kind: 'pong' };
    }
    if (header.opcode !== 0) this.#messageOpcode = header.opcode;
    if (!header.fin) {
      this.#append(payload);
      return undefined;
    }
    let data = payload;
    if (this.#fragmentBytes > 0) {
      this.#append(payload);
      data = this.#fragments!.subarray(0, this.#fragmentBytes);
    }
    const binary = this.#messageOpcode === 2;
    this.#messageOpcode = 0;
    this.#fragments = undefined;
    this.#fragmentBytes = 0;
    if (!binary && !isUtf8(data)) return void this.#fail(1007, 'text message is not valid UTF-8');
    return { kind: 'message', data, binary };
  }

  /** Copies a fragment's payload into the message buffer (the frame header checked the total against `max`). */
  #append(payload: Buffer): void {
    if (payload.length === 0) return;
    const needed = this.#fragmentBytes + payload.length;
    const held = this.#fragments;
    if (held === undefined || held.length < needed) {
      const grown = Buffer.allocUnsafe(Math.min(this.#max, Math.max(needed, 2 * (held?.length ?? 0), 4096)));
      held?.copy(grown, 0, 0, this.#fragmentBytes);
      this.#fragments = grown;
    }
    payload.copy(this.#fragments!, this.#fragmentBytes);
    this.#fragmentBytes = needed;
  }

  /** The first n (<= 14) buffered bytes, without consuming them. */
  #peek(n: number): Buffer {
    const first = this.#chunks[0]!;
    return first.length >= n ? first : Buffer.concat(this.#chunks, n);
  }

  #take(n: number): Buffer {
    if (n === 0) return EMPTY;
    this.#buffered -= n;
    const chunks = this.#chunks;
    const first = chunks[0]!;
    if (first.length === n) {
      chunks.shift();
      return first;
    }
    if (first.length > n) {
      chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const chunk = chunks[0]!;
      const k = Math.min(chunk.length, n - at);
      chunk.copy(out, at, 0, k);
      at += k;
      if (k === chunk.length) chunks.shift();
      else chunks[0] = chunk.subarray(k);
    }
    return out;
  }
}

function unmask(payload: Buffer, mask: Buffer): void {
  for (let i = 0; i < payload.length; i++) payload[i] = payload[i]! ^ mask[i & 3]!;
}

/** A Close frame: with a status code, or empty (answering a Close that had none). */
export function closeFrame(code: number | undefined): Buffer {
  if (code === undefined) return Buffer.from([0x88, 0]);
  const frame = Buffer.from([0x88, 2, 0, 0]);
  frame.writeUInt16BE(code, 2);
  return frame;
}

export function pongFrame(data: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x8a, data.length]), data]);
}
