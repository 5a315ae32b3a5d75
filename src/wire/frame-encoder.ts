import { HEADER_SIZE } from './frame-decoder.ts';

/** Encodes one payload (a string as UTF-8, or raw bytes) as a frame. Pure. */
export function encodeFrame(payload: string | Uint8Array): Buffer {
  if (typeof payload === 'string') {
    const n = Buffer.byteLength(payload, 'utf8');
    const frame = Buffer.allocUnsafe(HEADER_SIZE + n);
    frame.writeUInt32BE(n, 0);
    frame[4] = 0;
    if (n > 0) frame.write(payload, HEADER_SIZE, 'utf8');
    return frame;
  }
  const frame = Buffer.allocUnsafe(HEADER_SIZE + payload.length);
  frame.writeUInt32BE(payload.length, 0);
  frame[4] = 0;
  frame.set(payload, HEADER_SIZE);
  return frame;
}

/** Concatenates the frames of several payloads, as one pipelined write. */
export function encodeFrames(payloads: readonly (string | Uint8Array)[]): Buffer {
  return Buffer.concat(payloads.map((p) => encodeFrame(p)));
}
