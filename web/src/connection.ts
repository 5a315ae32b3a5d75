/**
 * The browser's connection: a WebSocket carrying the text protocol through
 * the same ClientProtocol the Node client library uses (escaping, reply and
 * push matching), with reconnects and token logins.
 */
import { ClientProtocol, ConnectionClosedError, ReplyError } from '../../src/client/protocol.ts';

export { ReplyError, ConnectionClosedError };

export type ConnectionEvents = {
  push(fields: string[]): void;
  state(state: 'connecting' | 'open' | 'closed'): void;
  /** After a reconnect (not the first connect), once logged in again. */
  resumed(): void;
};

export class Connection {
  readonly #url: string;
  readonly #events: ConnectionEvents;
  #ws: WebSocket | undefined;
  #protocol: ClientProtocol | undefined;
  #token: string | undefined;
  #everOpened = false;
  #stopped = false;
  #delay = 250;

  constructor(url: string, events: ConnectionEvents) {
    this.#url = url;
    this.#events = events;
  }

  get open(): boolean {
    return this.#ws?.readyState === WebSocket.OPEN;
  }

  /** Opens the socket; resolves once it is open (retries with backoff until then). */
  start(): Promise<void> {
    return new Promise((resolve) => this.#open(resolve));
  }

  /** Sends `req,<id>,...` and resolves with the reply fields; rejects with ReplyError. */
  request(...fields: string[]): Promise<string[]> {
    if (this.#protocol === undefined || !this.open) return Promise.reject(new ConnectionClosedError('not connected'));
    return this.#protocol.request(...fields);
  }

  /** Logs in with a token from POST /api/login; remembered for reconnects. */
  async useToken(token: string): Promise<void> {
    await this.request('token', token);
    this.#token = token;
  }

  forget(): void {
    this.#token = undefined;
  }

  /** Closes for good (logging out): no reconnect, the token forgotten. */
  close(): void {
    this.#stopped = true;
    this.#token = undefined;
    this.#ws?.close(1000);
  }

  #open(onOpen?: () => void): void {
    if (this.#stopped) return;
    this.#events.state('connecting');
    const ws = new WebSocket(this.#url, 'textserver.v1');
    this.#ws = ws;
    const protocol = new ClientProtocol((payload) => ws.send(payload), {
      push: (fields) => this.#events.push(fields),
      serverError: () => {},
    });
    this.#protocol = protocol;
    ws.onmessage = (e: MessageEvent) => protocol.receive(typeof e.data === 'string' ? e.data : '');
    ws.onopen = () => {
      this.#delay = 250;
      this.#events.state('open');
      const again = this.#everOpened;
      this.#everOpened = true;
      onOpen?.();
      if (again && this.#token !== undefined) {
        this.request('token', this.#token).then(
          () => this.#events.resumed(),
          () => this.forget(),
        );
      }
    };
    ws.onclose = () => {
      protocol.close(new ConnectionClosedError());
      if (this.#stopped) return;
      this.#events.state('closed');
      const delay = this.#delay;
      this.#delay = Math.min(this.#delay * 2, 5000);
      setTimeout(() => this.#open(onOpen), delay);
    };
  }
}
