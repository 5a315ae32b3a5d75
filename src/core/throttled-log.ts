import type { Logger } from 'pino';

/**
 * One kind of info line, at most once per interval: a flood of events (failed
 * logins during an attack) must not become a flood of log lines. The lines
 * held back are counted in the next one written (`suppressed`), or by
 * flush() on the server's sweep once the interval has passed.
 */
export class ThrottledLog {
  readonly #log: Logger;
  readonly #msg: string;
  readonly #intervalMs: number;
  #last = -Infinity;
  #suppressed = 0;

  constructor(log: Logger, msg: string, intervalMs: number) {
    this.#log = log;
    this.#msg = msg;
    this.#intervalMs = intervalMs;
  }

  note(fields: Record<string, unknown>, now = performance.now()): void {
    if (now - this.#last < this.#intervalMs) {
      this.#suppressed++;
      return;
    }
    this.#last = now;
    this.#log.info(this.#suppressed > 0 ? { ...fields, suppressed: this.#suppressed } : fields, this.#msg);
    this.#suppressed = 0;
  }

  /** Writes the count of lines held back, if any, once the interval has passed. */
  flush(now = performance.now()): void {
    if (this.#suppressed === 0 || now - this.#last < this.#intervalMs) return;
    this.#last = now;
    this.#log.info({ suppressed: this.#suppressed }, this.#msg);
    this.#suppressed = 0;
  }
}
