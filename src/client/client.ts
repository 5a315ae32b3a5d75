/**
 * The Node client library: `connect()` gives a client that pipelines calls,
 * matches `req` ids, and emits pushes (telling them from replies by the push
 * words the server's modules declare, asked for at connect). dumbclient,
 * dumbconsole, the bench and the integration tests all use it.
 */
import net from 'node:net';
import tls from 'node:tls';
import { EventEmitter } from 'node:events';
import { FrameDecoder, isFault } from '../wire/frame-decoder.ts';
import { encodeFrame } from '../wire/frame-encoder.ts';
import { ClientProtocol, ConnectionClosedError, ReplyError, type PushWords } from './protocol.ts';

export { ReplyError, ConnectionClosedError, type PushWords } from './protocol.ts';

export type ConnectOptions = {
  host?: string;
  port: number;
  /** TLS; `insecure` accepts self-signed certificates. */
  tls?: boolean | { insecure?: boolean; ca?: string | Buffer };
  /** Largest frame accepted from the server (default 64 MiB). */
  maxFrame?: number;
  /** Reconnect with backoff when the connection drops (and log in again). Off by default. */
  reconnect?: boolean | { initialDelayMs?: number; maxDelayMs?: number };
  /**
   * Fixed push words. By default the client asks the server (`pushes`, the
   * info module) right after connecting, and uses a built-in list until it
   * hears back, or for good when the server does not know that command.
   */
  pushWords?: PushWords;
};

export interface TextClientEvents {
  push: [fields: string[]];
  /** An unsolicited error tuple, e.g. `error,fatal,timeout`. */
  serverError: [err: ReplyError];
  /** Every reply's fields as it arrives, in wire order with the pushes (before its call resolves). */
  reply: [fields: string[]];
  /** Every raw frame payload, both directions (`in` or `out`), for --hex views. */
  frame: [direction: 'in' | 'out', frame: Buffer];
  close: [];
  reconnecting: [attempt: number, delayMs: number];
  /** Connected again, and logged in again when a login was remembered; `loginError` when that login was refused (it is then forgotten). */
  reconnected: [loginError?: ReplyError];
}

export class TextClient extends EventEmitter<TextClientEvents> {
  readonly options: ConnectOptions;
  #socket!: net.Socket;
  #protocol!: ClientProtocol;
  #closedByUser = false;
  #login: string[] | undefined;
  #connected = false;
  #reconnecting = false;

  private constructor(options: ConnectOptions) {
    super();
    this.options = options;
  }

  static async connect(options: ConnectOptions): Promise<TextClient> {
    const client = new TextClient(options);
    await client.#open();
    return client;
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** Sends a request; resolves with the reply fields, rejects with ReplyError for an error tuple. */
  call(...fields: string[]): Promise<string[]> {
    return this.#protocol.call(...fields);
  }

  /** Sends a payload in comma syntax as typed (`send,bob,hi`); resolves like call. */
  callPayload(payload: string): Promise<string[]> {
    return this.#protocol.callPayload(payload);
  }

  /** Like call, wrapped in `req,<id>` so the reply is matched by id. */
  request(...fields: string[]): Promise<string[]> {
    return this.#protocol.request(...fields);
  }

  /** Logs in, and remembers the credentials for automatic reconnects. */
  async login(user: string, password: string): Promise<void> {
    await this.call('login', user, password);
    this.#login = ['login', user, password];
  }

  /**
   * Remembers a request that logged this connection in (`login,<user>,<password>`
   * sent some other way, or a module's `token,<token>`), to send again after
   * every reconnect; `undefined` forgets it.
   */
  rememberLogin(fields: readonly string[] | undefined): void {
    this.#login = fields === undefined ? undefined : [...fields];
  }

  /** The push words in force on this connection. */
  get pushWords(): PushWords {
    return this.#protocol.pushWords;
  }

  /** Writes raw bytes (tests use it for malformed frames). */
  writeRaw(bytes: Uint8Array): void {
    this.#socket.write(bytes);
  }

  /** Resolves once the server closed the connection (or at once if closed). */
  closed(): Promise<void> {
    if (!this.#connected) return Promise.resolve();
    return new Promise((resolve) => this.once('close', resolve));
  }

  /** Drops the connection at once, as a crashed client would (no reconnect). */
  destroy(): void {
    this.#closedByUser = true;
    // a TLS socket has no TCP handle of its own to reset (resetAndDestroy throws)
    if (this.#socket instanceof tls.TLSSocket) this.#socket.destroy();
    else this.#socket.resetAndDestroy();
  }

  close(): Promise<void> {
    this.#closedByUser = true;
    const done = this.closed();
    this.#socket.end();
    setTimeout(() => this.#socket.destroy(), 1000).unref();
    return done;
  }

  async #open(): Promise<void> {
    const { host = '127.0.0.1', port } = this.options;
    const socket = await dial(host, port, this.options.tls);
    this.#socket = socket;
    this.#connected = true;
    const decoder = new FrameDecoder(this.options.maxFrame ?? 64 * 1024 * 1024);
    let learning = false;
    const protocol = new ClientProtocol(
      (payload) => {
        const frame = encodeFrame(payload);
        if (this.listenerCount('frame') > 0 && !learning) this.emit('frame', 'out', frame);
        socket.write(frame);
      },
      { push: (fields) => this.emit('push', fields), serverError: (err) => this.emit('serverError', err), reply: (fields) => this.emit('reply', fields) },
      this.options.pushWords,
    );
    this.#protocol = protocol;
    // first on the connection, so its reply comes before any other; raw views leave it out
    if (this.options.pushWords === undefined) {
      learning = true;
      void protocol.learnPushWords();
      learning = false;
    }
    socket.on('data', (chunk: Buffer) => {
      decoder.push(chunk);
      for (let frame = decoder.read(); frame !== undefined; frame = decoder.read()) {
        if (isFault(frame)) {
          socket.destroy();
          return;
        }
        const payload = frame.toString('utf8');
        if (this.listenerCount('frame') > 0 && !protocol.isInternal(payload)) this.emit('frame', 'in', encodeFrame(frame));
        protocol.receive(payload);
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.#connected = false;
      protocol.close(new ConnectionClosedError());
      this.emit('close');
      if (this.options.reconnect && !this.#closedByUser && !this.#reconnecting) void this.#reconnect();
    });
  }

  /** One loop at a time: a connection that drops while logging in again just goes round once more. */
  async #reconnect(): Promise<void> {
    const opts = typeof this.options.reconnect === 'object' ? this.options.reconnect : {};
    let delay = opts.initialDelayMs ?? 100;
    this.#reconnecting = true;
    try {
      for (let attempt = 1; !this.#closedByUser; attempt++) {
        this.emit('reconnecting', attempt, delay);
        await new Promise((r) => setTimeout(r, delay));
        if (this.#closedByUser) return;
        try {
          await this.#open();
          if (this.#closedByUser) {
            // close() was called while dialling: this socket is not the one it ended
            this.#socket.end();
            return;
          }
          let loginError: ReplyError | undefined;
          if (this.#login !== undefined) {
            try {
              await this.call(...this.#login);
            } catch (err) {
              if (!(err instanceof ReplyError)) throw err;
              // refused (the account is gone, throttled...): retrying the same credentials would not help
              loginError = err;
              this.#login = undefined;
            }
          }
          this.emit('reconnected', loginError);
          return;
        } catch {
          delay = Math.min(delay * 2, opts.maxDelayMs ?? 5000);
        }
      }
    } finally {
      this.#reconnecting = false;
    }
  }
}

function dial(host: string, port: number, useTls: ConnectOptions['tls']): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const settle = (socket: net.Socket) => {
      socket.off('error', reject);
      socket.setNoDelay(true);
      resolve(socket);
    };
    if (useTls) {
      const o = typeof useTls === 'object' ? useTls : {};
      const socket: tls.TLSSocket = tls.connect({ host, port, servername: net.isIP(host) ? undefined : host, rejectUnauthorized: !o.insecure, ca: o.ca }, () => settle(socket));
      socket.once('error', reject);
    } else {
      const socket = net.connect({ host, port }, () => settle(socket));
      socket.once('error', reject);
    }
  });
}

export function connect(options: ConnectOptions): Promise<TextClient> {
  return TextClient.connect(options);
}
