import type { OutFrame } from './out-frame.ts';

/**
 * What a session needs from its transport (TCP, TLS, WebSocket): a way to
 * write frames and to close. Sessions never see sockets.
 */
export interface Link {
  readonly transport: string;
  readonly remoteAddress: string;
  /** Queues a frame; `written` runs once it reached the kernel (err on failure). */
  write(frame: OutFrame, written?: (err?: Error | null) => void): void;
  /** Bytes queued but not yet handed to the kernel. */
  pendingBytes(): number;
  /** Stops or restarts reading from the peer (backpressure). */
  setReading(on: boolean): void;
  /** Calls `cb` once the queued bytes have been handed to the kernel. */
  onDrain(cb: () => void): void;
  /** Monotonic ms since a partial frame started arriving, or 0 when none is pending. */
  partialSince(): number;
  /** Flushes what is queued, then closes (`code` is for WebSocket close frames). */
  close(reason: 'fatal' | 'shutdown' | 'normal'): void;
}
