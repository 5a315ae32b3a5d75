/**
 * Transport-independent inbox bookkeeping (DELIVERY.md): the epoch and the
 * highest seq processed, the `resume` request that continues from there,
 * and the filter that drops entries already processed. The Node client
 * uses it over TCP; it imports nothing from Node so a browser client can too.
 */

/** Where a client is in its inbox stream: keep it to resume from there after a restart. */
export type InboxPosition = { readonly epoch: string; readonly seq: number };

/** One inbox entry: `inbox,<seq>,<fields...>` without its first two fields. */
export type InboxEntry = {
  readonly seq: number;
  /** The entry's frame: `send,<from>,<command>,...`, a module's delivery, or a carbon `sent,<to>,<command>,...`. */
  readonly fields: string[];
  /** A carbon: something this user sent (from any device), `sent,<to>,...`. */
  readonly carbon: boolean;
};

/** A `resumed,<epoch>,<head>` reply, and what was asked. */
export type Resumed = { readonly epoch: string; readonly head: number; readonly after: number | 'latest' };

/** The first field of an inbox entry's frame. */
export const INBOX_WORD = 'inbox';

const SEQ = /^(0|[1-9]\d*)$/;

export class InboxStream {
  #epoch: string;
  #seq: number;

  constructor(position: InboxPosition = { epoch: '', seq: 0 }) {
    this.#epoch = position.epoch;
    this.#seq = position.seq;
  }

  get position(): InboxPosition {
    return { epoch: this.#epoch, seq: this.#seq };
  }

  /** Continue from a stored position (a new device: `{ epoch: '', seq: 0 }`). */
  moveTo(position: InboxPosition): void {
    this.#epoch = position.epoch;
    this.#seq = position.seq;
  }

  /** Forgets the position: the stream was reset, or another user logged in. */
  reset(): void {
    this.moveTo({ epoch: '', seq: 0 });
  }

  /** `resume,<epoch>,<seq>` from the position; `latest` asks for live entries only (any epoch). */
  resumeFields(after: 'position' | 'latest' = 'position'): string[] {
    return after === 'latest' ? ['resume', '', 'latest'] : ['resume', this.#epoch, String(this.#seq)];
  }

  /**
   * Takes a `resumed,<epoch>,<head>` reply: the epoch becomes the stream's;
   * after `latest` everything up to the head counts as processed. Entries
   * that arrived before this reply was handled are kept (they are past the
   * head), which is why the position only moves forward here.
   */
  resumed(fields: readonly string[], after: number | 'latest'): Resumed {
    const [word, epoch = '', headField = ''] = fields;
    if (word !== 'resumed' || !SEQ.test(headField)) throw new Error(`not a resumed reply: ${fields.join(',')}`);
    const head = Number(headField);
    this.#epoch = epoch;
    if (after === 'latest') this.#seq = Math.max(this.#seq, head);
    return { epoch, head, after };
  }

  /**
   * Takes an `inbox,<seq>,<fields...>` push: the entry when it is new (the
   * position moves to it), undefined for one already processed (a replay
   * overlapping what was seen live) or a malformed frame.
   */
  accept(fields: readonly string[]): InboxEntry | undefined {
    const [word, seqField = '', ...rest] = fields;
    if (word !== INBOX_WORD || !SEQ.test(seqField)) return undefined;
    const seq = Number(seqField);
    if (seq <= this.#seq) return undefined;
    this.#seq = seq;
    return { seq, fields: rest, carbon: rest[0] === 'sent' };
  }
}
