import { encodeFrame } from '../wire/frame-encoder.ts';
import { formatFields } from '../text/fields.ts';

/**
 * One outbound payload, formatted once and encoded at most once, however
 * many connections it goes to (a room message reaches every member).
 */
export class OutFrame {
  readonly payload: string;
  #bytes: Buffer | undefined;

  constructor(payload: string) {
    this.payload = payload;
  }

  static of(fields: readonly string[]): OutFrame {
    return new OutFrame(formatFields(fields));
  }

  /** The framed bytes for byte-stream transports. */
  get bytes(): Buffer {
    return (this.#bytes ??= encodeFrame(this.payload));
  }

  get byteLength(): number {
    return this.bytes.length;
  }
}

/** Constant replies, encoded once. */
export const OK_FRAME = new OutFrame('ok');
export const EMPTY_FRAME = new OutFrame('');
