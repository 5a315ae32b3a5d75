/**
 * Frames queued for one connection and written together: everything of one
 * event-loop turn (or one read, for the TCP link) leaves in one write,
 * which is what makes fan-out cheap. Write callbacks (a stored message that
 * must be kept if its write fails) ride on that one write.
 */
import type { Socket } from 'node:net';

type Written = (err?: Error | null) => void;
type Sink = (bytes: Buffer, done?: Written) => void;

export class WriteBatch {
  readonly #sink: Sink;
  readonly #counters: { framesOut: number; bytesOut: number };
  #parts: Buffer[] = [];
  #callbacks: Written[] | undefined;
  #scheduled = false;
  /** Bytes queued here, not yet handed to the socket. */
  bytes = 0;
  /** While true, add() does not schedule a flush: the owner flushes itself (end of a read). */
  holding = false;

  constructor(sink: Sink, counters: { framesOut: number; bytesOut: number }) {
    this.#sink = sink;
    this.#counters = counters;
  }

  get scheduled(): boolean {
    return this.#scheduled;
  }

  add(frame: Buffer, written?: Written): void {
    this.#parts.push(frame);
    this.bytes += frame.length;
    if (written !== undefined) (this.#callbacks ??= []).push(written);
    if (!this.#scheduled && !this.holding) {
      this.#scheduled = true;
      process.nextTick(flushBatch, this);
    }
  }

  flush(): void {
    this.#scheduled = false;
    const parts = this.#parts;
    if (parts.length === 0) return;
    const callbacks = this.#callbacks;
    this.#parts = [];
    this.bytes = 0;
    this.#callbacks = undefined;
    const bytes = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    this.#counters.framesOut += parts.length;
    this.#counters.bytesOut += bytes.length;
    if (callbacks === undefined) {
      this.#sink(bytes);
      return;
    }
    this.#sink(bytes, (err) => {
      for (const cb of callbacks) cb(err);
    });
  }
}

function flushBatch(batch: WriteBatch): void {
  batch.flush();
}

/**
 * The output side every stream link shares (TCP, TLS, WebSocket): frames
 * batched into one socket write, the unsent bytes the session bounds, read
 * pausing for backpressure, and drain. After `end()` nothing more is
 * written; a write then reports failure to its callback.
 */
export class SocketOutput {
  readonly batch: WriteBatch;
  readonly #socket: Socket;
  closed = false;
  /** Socket writes whose callback has not run yet, and who waits for there to be none. */
  #inflight = 0;
  #drainWaiters: (() => void)[] = [];

  constructor(socket: Socket, counters: { framesOut: number; bytesOut: number }) {
    this.#socket = socket;
    this.batch = new WriteBatch((bytes, done) => {
      this.#inflight++;
      socket.write(bytes, (err) => {
        done?.(err);
        if (--this.#inflight === 0) this.#drained();
      });
    }, counters);
  }

  write(bytes: Buffer, written?: Written): void {
    if (this.closed) written?.(new Error('connection closed'));
    else this.batch.add(bytes, written);
  }

  pendingBytes(): number {
    return this.#socket.writableLength + this.batch.bytes;
  }

  setReading(on: boolean): void {
    if (this.closed) return;
    if (on) this.#socket.resume();
    else this.#socket.pause();
  }

  /**
   * Runs `cb` once every queued byte reached the kernel. Not the socket's
   * 'drain' event: that comes only after a write that went past the socket's
   * highWaterMark (64 KiB since Node 22), so a session held back at fewer
   * unsent bytes (`--max-outbound` under 128 KiB) waited for it forever.
   */
  onDrain(cb: () => void): void {
    this.batch.flush();
    if (this.#inflight === 0 && this.#socket.writableLength === 0) queueMicrotask(cb);
    else this.#drainWaiters.push(cb);
  }

  #drained(): void {
    const waiters = this.#drainWaiters;
    if (waiters.length === 0) return;
    this.#drainWaiters = [];
    for (const cb of waiters) cb();
  }

  /** Flushes what is queued and writes nothing more; false when it had ended already. */
  end(): boolean {
    if (this.closed) return false;
    this.batch.flush();
    this.closed = true;
    return true;
  }
}
