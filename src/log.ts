import pino, { type Logger } from 'pino';

/**
 * pino JSON lines on stdout, written asynchronously. Fields that could carry
 * secrets are redacted as a second line of defence: no code path logs them
 * on purpose.
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: { paths: ['password', 'hash', 'token', '*.password', '*.hash', '*.token'], censor: '[redacted]' },
    },
    destination ?? stdout(),
  );
}

/** What this file relies on in pino's asynchronous destination (sonic-boom). */
type AsyncDestination = pino.DestinationStream & {
  flushSync(): void;
  once(event: 'drain' | 'error', listener: () => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  /** sonic-boom internals: bytes not yet written, and whether a write is in flight */
  _len?: number;
  _writing?: boolean;
};

function stdout(): pino.DestinationStream {
  const dest = pino.destination({ dest: 1, sync: false }) as unknown as AsyncDestination;
  // pino already stops writing on EPIPE (the reader went away); any other
  // write error stops the log too, rather than crash the server or loop
  // logging its own failure
  dest.on('error', () => {
    dest.write = () => {};
    dest.flushSync = () => {};
  });
  return dest;
}

function destinationOf(log: Logger): AsyncDestination | undefined {
  const stream = (log as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as Partial<AsyncDestination> | undefined;
  return typeof stream?.flushSync === 'function' ? (stream as AsyncDestination) : undefined;
}

/**
 * Nothing waits on stdout from now on. pino flushes an asynchronous
 * destination synchronously when the process exits, and sonic-boom retries
 * a write that failed with EPIPE forever: with `npm start | tee log` and
 * Ctrl-C, tee is gone and the server would never exit, whatever signal
 * followed (its JavaScript never runs again).
 */
export function abandonLog(log: Logger): void {
  const dest = destinationOf(log);
  if (dest !== undefined) dest.flushSync = () => {};
}

/** Lets the last lines out, waiting at most `ms` for a slow or stopped reader, then abandons the log. */
export async function releaseLog(log: Logger, ms: number): Promise<void> {
  const dest = destinationOf(log);
  if (dest !== undefined && ((dest._len ?? 0) > 0 || dest._writing === true)) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      const done = () => (clearTimeout(timer), resolve());
      dest.once('drain', done);
      dest.once('error', done);
    });
  }
  abandonLog(log);
}
