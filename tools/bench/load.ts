/**
 * Closed-loop load over raw sockets: each connection keeps `pipeline`
 * requests outstanding and sends a new one per reply. Replies and pushes
 * have a fixed size per connection, so counting them is a division, and the
 * generator stays cheap next to the server it measures.
 */
import net from 'node:net';
import hdr from 'hdr-histogram-js';

export type Histogram = ReturnType<typeof hdr.build>;

export function histogram(): Histogram {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
}

/** performance.now() in microseconds, fixed width, so a payload carrying it has a fixed size. */
export const STAMP_WIDTH = 16;
export function stamp(): string {
  return Math.round(performance.now() * 1000)
    .toString()
    .padStart(STAMP_WIDTH, '0');
}

export function openSocket(port: number, localAddress?: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress, noDelay: true }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/**
 * Sends `request` and waits for exactly `replyBytes` bytes back (set-up
 * steps: login, subscribe). More bytes than that is a broken set-up and
 * rejects, rather than being pushed back into the stream.
 */
export function exchange(socket: net.Socket, request: Buffer, replyBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      got += chunk.length;
      if (got >= replyBytes) {
        socket.off('data', onData);
        if (got > replyBytes) reject(new Error(`expected ${replyBytes} bytes in reply, got ${got}`));
        else resolve(Buffer.concat(chunks));
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write(request);
  });
}

export type Window = { measuring: boolean; count: number; latency: Histogram };

/** Drives one connection in a closed loop; counts and times replies while `window.measuring`. */
export function closedLoop(socket: net.Socket, request: Buffer | (() => Buffer), replySize: number, pipeline: number, window: Window): () => void {
  const next = typeof request === 'function' ? request : () => request;
  const sentAt: number[] = [];
  let head = 0;
  let partial = 0;
  let stopped = false;
  const send = (n: number) => {
    const parts: Buffer[] = [];
    const now = performance.now();
    for (let i = 0; i < n; i++) {
      parts.push(next());
      sentAt.push(now);
    }
    socket.write(n === 1 ? parts[0]! : Buffer.concat(parts));
  };
  socket.on('data', (chunk: Buffer) => {
    partial += chunk.length;
    const replies = Math.floor(partial / replySize);
    partial -= replies * replySize;
    if (replies === 0) return;
    const now = performance.now();
    if (window.measuring) {
      window.count += replies;
      for (let i = 0; i < replies; i++) window.latency.recordValue(Math.max(1, Math.round((now - sentAt[head + i]!) * 1000)));
    }
    head += replies;
    if (head > 4096) {
      sentAt.splice(0, head);
      head = 0;
    }
    if (!stopped) send(replies);
  });
  socket.on('error', () => {});
  send(pipeline);
  return () => {
    stopped = true;
  };
}

/**
 * Counts fixed-size pushes on a receiving connection. Latency comes from the
 * stamp inside the oldest push of each read and is counted for every push of
 * that read: an upper bound, and it keeps the generator cheap next to the
 * servers in fan-out.
 */
export function receiver(socket: net.Socket, pushSize: number, stampFromEnd: number, window: Window): void {
  let carry: Buffer | undefined;
  socket.on('data', (chunk: Buffer) => {
    const buf = carry === undefined ? chunk : Buffer.concat([carry, chunk]);
    const n = Math.floor(buf.length / pushSize);
    carry = buf.length % pushSize === 0 ? undefined : buf.subarray(n * pushSize);
    if (!window.measuring || n === 0) return;
    window.count += n;
    const end = pushSize - stampFromEnd;
    const sent = Number(buf.toString('latin1', end - STAMP_WIDTH, end));
    window.latency.recordValueWithCount(Math.max(1, Math.round(performance.now() * 1000 - sent)), n);
  });
  socket.on('error', () => {});
}

export function newWindow(): Window {
  return { measuring: false, count: 0, latency: histogram() };
}

/** A latency probe: one request every `intervalMs` (not a flood), timed while the window measures. */
export function pacedLoop(socket: net.Socket, request: Buffer, replySize: number, intervalMs: number, window: Window): () => void {
  const sentAt: number[] = [];
  let partial = 0;
  socket.on('data', (chunk: Buffer) => {
    partial += chunk.length;
    const now = performance.now();
    while (partial >= replySize) {
      partial -= replySize;
      const sent = sentAt.shift()!;
      if (window.measuring) {
        window.count++;
        window.latency.recordValue(Math.max(1, Math.round((now - sent) * 1000)));
      }
    }
  });
  socket.on('error', () => {});
  const timer = setInterval(() => {
    sentAt.push(performance.now());
    socket.write(request);
  }, intervalMs);
  return () => clearInterval(timer);
}
