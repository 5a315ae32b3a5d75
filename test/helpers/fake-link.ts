/**
 * A Link with no socket behind it, for unit tests of the session and the
 * hub: it stands for a transport, records what the session does to it and
 * lets the test play the kernel (take the queued bytes, fail a write).
 */
import type { Link } from '../../src/core/link.ts';
import type { OutFrame } from '../../src/core/out-frame.ts';

type Written = (err?: Error | null) => void;

export class FakeLink implements Link {
  readonly transport = 'fake';
  readonly remoteAddress = '192.0.2.1';
  /** Every frame written, in order (the very objects, to tell a shared frame). */
  readonly written: OutFrame[] = [];
  /** Calls to setReading, in order. */
  readonly reading: boolean[] = [];
  closed: 'fatal' | 'shutdown' | 'normal' | undefined;
  /** While true, written bytes stay queued (pendingBytes) and their callbacks wait for take(). */
  holding = false;
  partial = 0;
  #pending = 0;
  #callbacks: Written[] = [];
  #drains: (() => void)[] = [];

  /** The payloads written, in order. */
  get frames(): string[] {
    return this.written.map((f) => f.payload);
  }

  write(frame: OutFrame, written?: Written): void {
    this.written.push(frame);
    if (this.holding) {
      this.#pending += frame.payload.length;
      if (written !== undefined) this.#callbacks.push(written);
    } else {
      written?.();
    }
  }

  pendingBytes(): number {
    return this.#pending;
  }

  setReading(on: boolean): void {
    this.reading.push(on);
  }

  onDrain(cb: () => void): void {
    this.#drains.push(cb);
  }

  partialSince(): number {
    return this.partial;
  }

  close(reason: 'fatal' | 'shutdown' | 'normal'): void {
    this.closed ??= reason;
  }

  /** The kernel takes every queued byte (or, with `err`, the connection died under them). */
  take(err?: Error): void {
    this.#pending = 0;
    for (const cb of this.#callbacks.splice(0)) cb(err ?? null);
    for (const cb of this.#drains.splice(0)) cb();
  }
}

/** A payload as the transport hands it to Session.receive. */
export const bytes = (payload: string): Buffer => Buffer.from(payload, 'utf8');
