/** A raw framed socket, for tests that must see exact bytes and closes. */
import net from 'node:net';
import { FrameDecoder, isFault } from '../../src/wire/frame-decoder.ts';
import { encodeFrame } from '../../src/wire/frame-encoder.ts';
import { formatFields } from '../../src/text/fields.ts';

export class RawConnection {
  readonly socket: net.Socket;
  readonly frames: string[] = [];
  #waiters: (() => void)[] = [];
  #closed = false;
  readonly closedPromise: Promise<void>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    const decoder = new FrameDecoder(64 * 1024 * 1024);
    socket.on('data', (chunk: Buffer) => {
      decoder.push(chunk);
      for (let f = decoder.read(); f !== undefined; f = decoder.read()) {
        if (isFault(f)) throw new Error(`server sent a bad frame: ${f.info}`);
        this.frames.push(f.toString('utf8'));
      }
      this.#wake();
    });
    socket.on('error', () => {});
    this.closedPromise = new Promise((r) =>
      socket.on('close', () => {
        this.#closed = true;
        this.#wake();
        r();
      }),
    );
  }

  static fromSocket(socket: net.Socket): RawConnection {
    return new RawConnection(socket);
  }

  static open(port: number, host = '127.0.0.1'): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host }, () => resolve(new RawConnection(socket)));
      socket.once('error', reject);
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  write(bytes: Uint8Array | string): void {
    this.socket.write(typeof bytes === 'string' ? encodeFrame(bytes) : bytes);
  }

  send(...fields: string[]): void {
    this.write(formatFields(fields));
  }

  /** Waits until `count` frames arrived in all; returns them. */
  async waitFrames(count: number, timeoutMs = 5000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length < count) {
      if (this.#closed) throw new Error(`closed after ${this.frames.length} of ${count} frames: ${JSON.stringify(this.frames)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${this.frames.length} of ${count} frames: ${JSON.stringify(this.frames)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.#waiters.push(() => (clearTimeout(t), r()));
      });
    }
    return this.frames.slice(0, count);
  }

  #cursor = 0;

  /** The next frame not yet returned by next() or ask(). */
  async next(timeoutMs = 5000): Promise<string> {
    const frames = await this.waitFrames(this.#cursor + 1, timeoutMs);
    return frames[this.#cursor++]!;
  }

  /** The next `count` unread frames. */
  async nextN(count: number, timeoutMs = 5000): Promise<string[]> {
    const out: string[] = [];
    for (let i = 0; i < count; i++) out.push(await this.next(timeoutMs));
    return out;
  }

  /** Sends one request and returns the next unread frame (its reply when nothing else is pending). */
  async ask(...fields: string[]): Promise<string> {
    this.send(...fields);
    return this.next();
  }

  async waitClosed(timeoutMs = 5000): Promise<void> {
    await Promise.race([this.closedPromise, new Promise((_, reject) => setTimeout(() => reject(new Error('connection still open')), timeoutMs))]);
  }

  close(): void {
    this.socket.destroy();
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }
}
