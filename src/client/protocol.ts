/**
 * Transport-independent client logic: turns calls into payloads and
 * payloads back into replies and pushes. Used over TCP by `client.ts` and
 * over WebSocket by the browser client, so escaping and matching are the
 * same tested code everywhere.
 */
import { formatFields, isFieldsFault, parseFields } from '../text/fields.ts';

/** An `error,<fatality>,<type>[,info]` reply. */
export class ReplyError extends Error {
  readonly type: string;
  readonly fatal: boolean;
  readonly info: string;
  readonly fields: readonly string[];

  constructor(fields: readonly string[]) {
    const [, fatality, type = 'unknown', ...info] = fields;
    super(`${type}${info.length > 0 ? `: ${info.join(',')}` : ''}`);
    this.name = 'ReplyError';
    this.fields = fields;
    this.type = type;
    this.fatal = fatality === 'fatal';
    this.info = info.join(',');
  }
}

export type HistoryMessage = { id: number; time: number; user: string; text: string };

/** A `history,<room>,<count>,<id>,<time>,<user>,<text>...` reply as messages, oldest first. */
export function parseHistory(fields: readonly string[]): HistoryMessage[] {
  const out: HistoryMessage[] = [];
  for (let i = 3; i + 3 < fields.length; i += 4) {
    out.push({ id: Number(fields[i]), time: Number(fields[i + 1]), user: fields[i + 2]!, text: fields[i + 3]! });
  }
  return out;
}

/** Raised for every outstanding call when the connection goes away. */
export class ConnectionClosedError extends Error {
  constructor(message = 'connection closed') {
    super(message);
    this.name = 'ConnectionClosedError';
  }
}

/** First fields that mark a push, as PROTOCOL.md and MODULES.md define them. */
export const DEFAULT_PUSH_WORDS: readonly string[] = ['send', 'room', 'friend', 'presence'];

/**
 * Commands whose own reply starts with a push word: while one of them is the
 * oldest outstanding plain call, a frame with that word is taken as its reply.
 * (`request()` needs no such guess: it matches by id.)
 */
const REPLIES_LIKE_PUSHES: Readonly<Record<string, string>> = { presence: 'presence' };

/** Automatic request ids start with this, so they never collide with ids a person types. */
export const AUTO_ID = '~';

type Pending = { command: string; resolve(fields: string[]): void; reject(err: Error): void };

export type ProtocolEvents = {
  push(fields: string[]): void;
  /** An unsolicited error tuple (a fatal error such as `timeout` or `shutdown`). */
  serverError(err: ReplyError): void;
  /** Every reply as it arrives, in wire order with the pushes (printing tools use it). */
  reply?(fields: string[]): void;
};

export class ClientProtocol {
  readonly #send: (payload: string) => void;
  readonly #events: ProtocolEvents;
  readonly #pushWords: ReadonlySet<string>;
  readonly #calls: Pending[] = [];
  readonly #requests = new Map<string, Pending>();
  #nextId = 1;
  #closed: Error | undefined;

  constructor(send: (payload: string) => void, events: ProtocolEvents, pushWords: readonly string[] = DEFAULT_PUSH_WORDS) {
    this.#send = send;
    this.#events = events;
    this.#pushWords = new Set(pushWords);
  }

  get outstanding(): number {
    return this.#calls.length + this.#requests.size;
  }

  /** Sends one request; resolves with the reply fields (`[]` for an empty frame). */
  call(...fields: string[]): Promise<string[]> {
    return new Promise((resolve, reject) => {
      if (this.#closed) return reject(this.#closed);
      this.#calls.push({ command: fields[0] ?? '', resolve, reject });
      this.#send(formatFields(fields));
    });
  }

  /** Sends a payload already in comma syntax, as typed by a person (consoles, scripts). */
  callPayload(payload: string): Promise<string[]> {
    const parsed = parseFields(payload);
    const command = isFieldsFault(parsed) ? '' : (parsed[0] ?? '');
    return new Promise((resolve, reject) => {
      if (this.#closed) return reject(this.#closed);
      this.#calls.push({ command, resolve, reject });
      this.#send(payload);
    });
  }

  /** Sends `req,<id>,...`; resolves with the reply fields after `req,<id>`, matched by id. */
  request(...fields: string[]): Promise<string[]> {
    return new Promise((resolve, reject) => {
      if (this.#closed) return reject(this.#closed);
      const id = `${AUTO_ID}${this.#nextId++}`;
      this.#requests.set(id, { command: fields[0] ?? '', resolve, reject });
      this.#send(formatFields(['req', id, ...fields]));
    });
  }

  /** Feeds one received payload. */
  receive(payload: string): void {
    const parsed = parseFields(payload);
    const fields = isFieldsFault(parsed) ? [payload] : payload === '' ? [] : parsed;
    const first = fields[0];
    if (first === 'req' && fields.length >= 2 && this.#requests.has(fields[1]!)) {
      const pending = this.#requests.get(fields[1]!)!;
      this.#requests.delete(fields[1]!);
      this.#events.reply?.(fields);
      settle(pending, fields.slice(2));
      return;
    }
    const next = this.#calls[0];
    if (first === 'error') {
      if (next !== undefined) {
        this.#events.reply?.(fields);
        settle(this.#calls.shift()!, fields);
      } else this.#events.serverError(new ReplyError(fields));
      return;
    }
    const isPush = first !== undefined && this.#pushWords.has(first) && REPLIES_LIKE_PUSHES[next?.command ?? ''] !== first;
    if (isPush || next === undefined) {
      this.#events.push(fields);
      return;
    }
    this.#events.reply?.(fields);
    settle(this.#calls.shift()!, fields);
  }

  /** Rejects everything outstanding; later calls reject at once. */
  close(err: Error = new ConnectionClosedError()): void {
    if (this.#closed) return;
    this.#closed = err;
    for (const p of this.#calls.splice(0)) p.reject(err);
    for (const p of this.#requests.values()) p.reject(err);
    this.#requests.clear();
  }
}

function settle(pending: Pending, fields: string[]): void {
  if (fields[0] === 'error') pending.reject(new ReplyError(fields));
  else pending.resolve(fields);
}
