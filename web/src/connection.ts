/**
 * The browser's connection: a WebSocket carrying the text protocol through
 * the same ClientProtocol the Node client library uses (escaping, reply and
 * push matching), with reconnects and token logins. It is an inbox
 * connection (DELIVERY.md): `sync` first on every socket, then the token
 * login, then `resume` from the position it holds, so after any reconnect
 * the direct messages continue where they stopped, each seq once.
 */
import { ClientProtocol, ConnectionClosedError, ReplyError } from '../../src/client/protocol.ts';
import { INBOX_WORD, InboxStream, type InboxEntry, type InboxPosition } from '../../src/client/inbox.ts';

export { ReplyError, ConnectionClosedError };
export type { InboxEntry, InboxPosition };

export type ConnectionEvents = {
  push(fields: string[]): void;
  /** An inbox entry not processed before, in seq order (received messages, carbons, friend deliveries). */
  entry(entry: InboxEntry, arrival: Arrival): void;
  /**
   * The stored position could not be resumed (stream_reset): the whole
   * retained inbox follows from seq 1. Called before its first entry: what
   * was shown from the inbox must be dropped, or it would show twice.
   */
  rebuild(): void;
  /** Not even the whole inbox could be read again (its oldest entries are gone): live entries follow; what is shown stays, but something may be missing. */
  gap(): void;
  state(state: 'connecting' | 'open' | 'closed'): void;
  /** After a reconnect (not the first connect), once logged in and resumed again. */
  resumed(): void;
};

/**
 * How an entry came: `live` (past the head the last resume answered: it
 * happened while connected), `missed` (replayed after a stored position:
 * it happened while away), `history` (replayed from seq 0: a new device or
 * a rebuild, everything retained).
 */
export type Arrival = 'live' | 'missed' | 'history';

type Waiter = { resolve: () => void; reject: (err: Error) => void };

export class Connection {
  readonly #url: string;
  readonly #events: ConnectionEvents;
  #ws: WebSocket | undefined;
  #protocol: ClientProtocol | undefined;
  #token: string | undefined;
  /** `start()` has resolved: later sockets are reconnects. */
  #started = false;
  #stopped = false;
  #delay = 250;
  /** Set once `follow()` was called: every login on a new socket resumes it. */
  #inbox: InboxStream | undefined;
  /** The head the last `resume` answered (entries up to it are a replay, later ones live) and where it replayed from. */
  #head = 0;
  #after = 0;
  /** Logged in (and resumed, when following) on the current socket. */
  #ready = false;
  #waiting: Waiter[] = [];

  constructor(url: string, events: ConnectionEvents) {
    this.#url = url;
    this.#events = events;
  }

  get open(): boolean {
    return this.#ws?.readyState === WebSocket.OPEN;
  }

  /** Epoch and highest seq processed; undefined until `follow()`. */
  get position(): InboxPosition | undefined {
    return this.#inbox?.position;
  }

  /** Opens the socket; resolves once one is open and has answered `sync` (retries with backoff until then). */
  start(): Promise<void> {
    return new Promise((resolve) => this.#open(resolve));
  }

  /** Sends `req,<id>,...` and resolves with the reply fields; rejects with ReplyError. */
  request(...fields: string[]): Promise<string[]> {
    if (this.#protocol === undefined || !this.open) return Promise.reject(new ConnectionClosedError('not connected'));
    return this.#protocol.request(...fields);
  }

  /**
   * `once,<key>,<fields...>`: run at most once by the server. A connection
   * lost before the reply means waiting for the next login (and resume)
   * and asking again with the same key: the repeat gets the recorded reply.
   */
  async requestOnce(key: string, ...fields: string[]): Promise<string[]> {
    for (;;) {
      await this.ready();
      try {
        return await this.request('once', key, ...fields);
      } catch (err) {
        if (!(err instanceof ConnectionClosedError)) throw err;
      }
    }
  }

  /** Resolves once logged in (and resumed) on the current socket; rejects once closed for good. */
  ready(): Promise<void> {
    if (this.#stopped) return Promise.reject(new ConnectionClosedError('logged out'));
    if (this.#ready && this.open) return Promise.resolve();
    return new Promise((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  /** Logs in with a token from POST /api/login; remembered for reconnects. */
  async useToken(token: string): Promise<void> {
    await this.request('token', token);
    this.#token = token;
  }

  /**
   * Follows the logged-in user's inbox from `position` (a new device:
   * none, which reads every retained entry), now and after every reconnect.
   */
  async follow(position?: InboxPosition): Promise<void> {
    this.#inbox = new InboxStream(position);
    await this.#resume();
    this.#setReady();
  }

  forget(): void {
    this.#token = undefined;
  }

  /** Closes for good (logging out): no reconnect, the token forgotten. */
  close(): void {
    this.#stopped = true;
    this.#token = undefined;
    this.#ws?.close(1000);
    for (const w of this.#waiting.splice(0)) w.reject(new ConnectionClosedError('logged out'));
  }

  #setReady(): void {
    this.#ready = true;
    for (const w of this.#waiting.splice(0)) w.resolve();
  }

  #push(fields: string[]): void {
    if (fields[0] !== INBOX_WORD) {
      this.#events.push(fields);
      return;
    }
    const entry = this.#inbox?.accept(fields);
    if (entry !== undefined) this.#events.entry(entry, entry.seq > this.#head ? 'live' : this.#after === 0 ? 'history' : 'missed');
  }

  /**
   * `resume` from the position; on `stream_reset` every retained entry
   * again (`resume,,0`, the shown ones dropped first), and when even those
   * are not all there any more, live entries only (`resume,,latest`).
   */
  async #resume(): Promise<void> {
    try {
      return await this.#resumeFrom('position');
    } catch (err) {
      if (!(err instanceof ReplyError) || err.type !== 'stream_reset') throw err;
    }
    try {
      return await this.#resumeFrom('start');
    } catch (err) {
      if (!(err instanceof ReplyError) || err.type !== 'stream_reset') throw err;
    }
    await this.#resumeFrom('latest');
  }

  async #resumeFrom(from: 'position' | 'start' | 'latest'): Promise<void> {
    const inbox = this.#inbox!;
    const fields = from === 'position' ? inbox.resumeFields() : ['resume', '', from === 'start' ? '0' : 'latest'];
    const after = from === 'latest' ? 'latest' : from === 'start' ? 0 : inbox.position.seq;
    let failed: Error | undefined;
    // taken as the reply arrives, before the entries right behind it are handled
    const seen = (reply: string[]) => {
      try {
        if (from !== 'position') {
          // positions from before are meaningless now (another epoch, or a gap)
          inbox.reset();
          if (from === 'start') this.#events.rebuild();
          else this.#events.gap();
        }
        this.#head = inbox.resumed(reply, after).head;
        this.#after = after === 'latest' ? this.#head : after;
      } catch (err) {
        failed = err as Error;
      }
    };
    await this.#protocol!.requestSeen(fields, seen);
    if (failed !== undefined) throw failed;
  }

  /** A new socket: `sync` first (a login must not be followed by stored version 1 frames), then the token login and the resume. */
  async #again(): Promise<void> {
    await this.request('sync');
    if (this.#token === undefined) return;
    try {
      await this.request('token', this.#token);
    } catch (err) {
      if (err instanceof ReplyError) this.forget();
      throw err;
    }
    if (this.#inbox !== undefined) await this.#resume();
    this.#setReady();
  }

  #open(onOpen?: () => void): void {
    if (this.#stopped) return;
    this.#events.state('connecting');
    const ws = new WebSocket(this.#url, 'textserver.v1');
    this.#ws = ws;
    const protocol = new ClientProtocol((payload) => ws.send(payload), {
      push: (fields) => this.#push(fields),
      serverError: () => {},
    });
    this.#protocol = protocol;
    ws.onmessage = (e: MessageEvent) => protocol.receive(typeof e.data === 'string' ? e.data : '');
    ws.onopen = () => {
      this.#delay = 250;
      this.#events.state('open');
      const again = this.#started;
      const loggedIn = this.#token !== undefined;
      void this.#again().then(
        () => {
          if (again) {
            if (loggedIn) this.#events.resumed();
            return;
          }
          // the first socket: the page logs in itself
          this.#started = true;
          onOpen?.();
        },
        () => undefined, // a dropped socket goes round again; a refused token was forgotten
      );
    };
    ws.onclose = () => {
      this.#ready = false;
      protocol.close(new ConnectionClosedError());
      if (this.#stopped) return;
      this.#events.state('closed');
      const delay = this.#delay;
      this.#delay = Math.min(this.#delay * 2, 5000);
      setTimeout(() => this.#open(onOpen), delay);
    };
  }
}
