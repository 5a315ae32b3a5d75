import { encodeFrame } from '../wire/frame-encoder.ts';
import { formatFields } from '../text/fields.ts';

/**
 * One outbound payload, formatted once and encoded at most once, however
 * many connections it goes to (a room message reaches every member).
 */
export class OutFrame {
  readonly payload: string;
  #bytes: Buffer | undefined;
  #wsBytes: Buffer | undefined;
  #size = -1;

  constructor(payload: string) {
    this.payload = payload;
  }

  static of(fields: readonly string[]): OutFrame {
    return new OutFrame(formatFields(fields));
  }

  /** Payload bytes (UTF-8): what the frame adds to a connection's unsent bytes, give or take its header. */
  get size(): number {
    if (this.#size < 0) this.#size = this.#bytes === undefined ? Buffer.byteLength(this.payload, 'utf8') : this.#bytes.length - 5;
    return this.#size;
  }

  /** The framed bytes for byte-stream transports. */
  get bytes(): Buffer {
    return (this.#bytes ??= encodeFrame(this.payload));
  }

  /** The payload as one unmasked WebSocket text frame (RFC 6455 section 5.2), for the ws transport. */
  get wsBytes(): Buffer {
    return (this.#wsBytes ??= encodeWsText(this.payload));
  }
}

/** Constant replies, encoded once. */
export const OK_FRAME = new OutFrame('ok');
export const EMPTY_FRAME = new OutFrame('');

function encodeWsText(payload: string): Buffer {
  const n = Buffer.byteLength(payload, 'utf8');
  const head = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(head + n);
  frame[0] = 0x81; // FIN, text
  if (n < 126) frame[1] = n;
  else if (n < 65536) {
    frame[1] = 126;
    frame.writeUInt16BE(n, 2);
  } else {
    frame[1] = 127;
    frame.writeBigUInt64BE(BigInt(n), 2);
  }
  frame.write(payload, head, 'utf8');
  return frame;
}
