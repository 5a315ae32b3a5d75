/**
 * Transport-independent client logic: turns calls into payloads and
 * payloads back into replies and pushes. Used over TCP by `client.ts` and
 * over WebSocket by the browser client, so escaping and matching are the
 * same tested code everywhere.
 */
import { formatFields, isFieldsFault, parseFields } from '../text/fields.ts';
import { INBOX_WORD } from './inbox.ts';

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

/** Raised for every outstanding call when the connection goes away. */
export class ConnectionClosedError extends Error {
  constructor(message = 'connection closed') {
    super(message);
    this.name = 'ConnectionClosedError';
  }
}

/**
 * What a server without the `pushes` command (one from before it, or one
 * without the info module) pushes: the fallback until the server has told,
 * not a source of truth. Modules declare their own push words.
 */
export const DEFAULT_PUSH_WORDS: readonly string[] = ['send', 'room', 'friend', 'presence'];
export const DEFAULT_REPLIES_LIKE_PUSHES: readonly string[] = ['presence'];

/** Which first fields mark a push, and which commands answer with a frame that starts like one. */
export type PushWords = { readonly words: readonly string[]; readonly repliesLikePushes?: readonly string[] };

/** A `pushes,<word>...[,,<command>...]` reply (the info module's) as PushWords. */
export function parsePushWords(fields: readonly string[]): PushWords {
  const rest = fields.slice(1);
  const gap = rest.indexOf('');
  return gap < 0 ? { words: rest } : { words: rest.slice(0, gap), repliesLikePushes: rest.slice(gap + 1).filter((c) => c !== '') };
}

/** Automatic request ids start with this, so they never collide with ids a person types. */
export const AUTO_ID = '~';

type Pending = {
  command: string;
  resolve(fields: string[]): void;
  reject(err: Error): void;
  internal?: boolean;
  /** Sees a reply that is not an error as it is received, before any later frame is handled. */
  seen?: (fields: string[]) => void;
};

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
  #pushWords: ReadonlySet<string>;
  /** Commands whose own reply starts with a push word: while one is the oldest outstanding plain call, such a frame is its reply. */
  #repliesLikePushes: ReadonlySet<string>;
  /** The id of the library's own `pushes` request while it is outstanding. */
  #learning: string | undefined;
  readonly #calls: Pending[] = [];
  readonly #requests = new Map<string, Pending>();
  #nextId = 1;
  #closed: Error | undefined;

  constructor(send: (payload: string) => void, events: ProtocolEvents, pushWords?: PushWords) {
    this.#send = send;
    this.#events = events;
    this.#pushWords = new Set(pushWords?.words ?? DEFAULT_PUSH_WORDS);
    this.#repliesLikePushes = new Set(pushWords === undefined ? DEFAULT_REPLIES_LIKE_PUSHES : (pushWords.repliesLikePushes ?? []));
  }

  /** The push words in force (the defaults until `learnPushWords` hears back). */
  get pushWords(): PushWords {
    return { words: [...this.#pushWords], repliesLikePushes: [...this.#repliesLikePushes] };
  }

  /**
   * Asks the server which words start a push (`req,~<n>,pushes`) and uses
   * them once answered; an error (an older server) keeps the defaults. Send
   * it first on a new connection: its reply then precedes every other reply.
   * Its frames are not reported as replies.
   */
  learnPushWords(): Promise<void> {
    return new Promise((resolve) => {
      if (this.#closed) return resolve();
      const id = `${AUTO_ID}${this.#nextId++}`;
      this.#learning = id;
      const done = () => {
        if (this.#learning === id) this.#learning = undefined;
        resolve();
      };
      const learn = (fields: string[]) => {
        if (fields[0] === 'pushes') {
          const learned = parsePushWords(fields);
          this.#pushWords = new Set(learned.words);
          this.#repliesLikePushes = new Set(learned.repliesLikePushes ?? []);
        }
        done();
      };
      this.#requests.set(id, { command: 'pushes', resolve: learn, reject: done, internal: true });
      this.#send(formatFields(['req', id, 'pushes']));
    });
  }

  /** Whether a received payload answers the library's own look-up (tools leave it out of raw views). */
  isInternal(payload: string): boolean {
    const id = this.#learning;
    return id !== undefined && (payload === `req,${id}` || payload.startsWith(`req,${id},`));
  }

  get outstanding(): number {
    return this.#calls.length + this.#requests.size - (this.#learning === undefined ? 0 : 1);
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
    return this.requestSeen(fields, undefined);
  }

  /**
   * Like request; `seen` gets the reply (not an error) at once, before the
   * frames after it are handled, where a promise would run too late: the
   * inbox entries that follow a `resumed` reply need its epoch and head.
   */
  requestSeen(fields: string[], seen: ((reply: string[]) => void) | undefined): Promise<string[]> {
    return new Promise((resolve, reject) => {
      if (this.#closed) return reject(this.#closed);
      const id = `${AUTO_ID}${this.#nextId++}`;
      this.#requests.set(id, { command: fields[0] ?? '', resolve, reject, seen });
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
      if (pending.internal !== true) this.#events.reply?.(fields);
      settle(pending, fields.slice(2));
      return;
    }
    if (this.#learning !== undefined && this.#whileLearning(fields)) return;
    const next = this.#calls[0];
    if (first === 'error') {
      if (next !== undefined) {
        this.#events.reply?.(fields);
        settle(this.#calls.shift()!, fields);
      } else this.#events.serverError(new ReplyError(fields));
      return;
    }
    // `inbox,<seq>,...` is the inbox's own push (DELIVERY.md), whatever list the server gave
    const isPush =
      first === INBOX_WORD || (first !== undefined && this.#pushWords.has(first) && !(next?.command === first && this.#repliesLikePushes.has(first)));
    if (isPush || next === undefined) {
      this.#events.push(fields);
      return;
    }
    this.#events.reply?.(fields);
    settle(this.#calls.shift()!, fields);
  }

  /**
   * The server answers in order, so until the push-word look-up (sent first)
   * is answered no reply to a later request can arrive: a frame then is a
   * push, whatever its first word. An untagged error or an empty frame means
   * the look-up will get no `req` answer (no req module, or not a
   * textserver): stop waiting and keep the defaults. True when handled.
   */
  #whileLearning(fields: string[]): boolean {
    if (fields.length > 0 && fields[0] !== 'error') {
      this.#events.push(fields);
      return true;
    }
    const id = this.#learning!;
    const pending = this.#requests.get(id);
    this.#requests.delete(id);
    this.#learning = undefined;
    pending?.reject(new ReplyError(fields));
    // a nonfatal error answers the look-up itself; a fatal one, or an empty frame, goes on as usual
    return fields[0] === 'error' && fields[1] !== 'fatal';
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
  else {
    pending.seen?.(fields);
    pending.resolve(fields);
  }
}
