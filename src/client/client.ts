/**
 * The Node client library: `connect()` gives a client that pipelines calls,
 * matches `req` ids, and emits pushes (telling them from replies by the push
 * words the server's modules declare, asked for at connect). It follows a
 * user's inbox (DELIVERY.md: `resume`, resumed again after every reconnect)
 * and sends commands under `once` keys that survive a reconnect.
 * dumbclient, dumbconsole, the bench, the delivery checker and the
 * integration tests all use it.
 */
import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { FrameDecoder, isFault } from '../wire/frame-decoder.ts';
import { encodeFrame } from '../wire/frame-encoder.ts';
import { ClientProtocol, ConnectionClosedError, ReplyError, type PushWords } from './protocol.ts';
import { INBOX_WORD, InboxStream, type InboxEntry, type InboxPosition, type Resumed } from './inbox.ts';

export { ReplyError, ConnectionClosedError, type PushWords } from './protocol.ts';
export type { InboxEntry, InboxPosition, Resumed } from './inbox.ts';

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
  /**
   * The inbox (used once `resume()` is called): `position` to continue from a
   * stored one; `onReset` what to read after a `stream_reset`: `latest` (live
   * entries only, the default) or `start` (every retained entry again, or
   * `latest` when the oldest are gone too).
   */
  inbox?: { position?: InboxPosition; onReset?: 'latest' | 'start' };
};

/** A fresh `once` key: 16 random characters, unique for any practical purpose. */
export function newOnceKey(): string {
  return randomBytes(12).toString('base64url');
}

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
  /**
   * Connected again, logged in again when a login was remembered, and its
   * inbox resumed when it was following one; `loginError` when that login
   * was refused (it is then forgotten), `resumeError` when the resume was.
   */
  reconnected: [loginError?: ReplyError, resumeError?: ReplyError];
  /** An inbox entry not processed before (repeats are dropped), in seq order; carbons too. */
  inbox: [entry: InboxEntry];
  /** A `resume` was answered: the entries after `after` follow as `inbox` events. */
  resumed: [resumed: Resumed];
  /** The server answered `stream_reset`: what the app shows from the inbox must be read again. The client resumes at once (`inbox.onReset`). */
  streamReset: [err: ReplyError];
}

export class TextClient extends EventEmitter<TextClientEvents> {
  readonly options: ConnectOptions;
  #socket!: net.Socket;
  #protocol!: ClientProtocol;
  #closedByUser = false;
  #login: string[] | undefined;
  #connected = false;
  #reconnecting = false;
  /** The user of the last `login()`, to tell whether the inbox position is still this user's. */
  #loginUser: string | undefined;
  #inbox: InboxStream | undefined;
  #inboxUser: string | undefined;
  /** resume() was called: resume again after a reconnect or a login. */
  #following = false;
  /** Callers waiting for the next reconnect to send again (requestWithKey). */
  #waiting: { resolve(): void; reject(err: Error): void }[] = [];

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

  /**
   * Logs in, and remembers the credentials for automatic reconnects. When
   * the client follows an inbox, it resumes it (a login stops the stream):
   * from the same position for the same user, from the start for another.
   */
  async login(user: string, password: string): Promise<void> {
    await this.call('login', user, password);
    this.#login = ['login', user, password];
    this.#loginUser = user;
    if (!this.#following) return;
    if (this.#inboxUser?.toLowerCase() !== user.toLowerCase()) this.#inbox?.reset();
    this.#inboxUser = user;
    await this.#resume();
  }

  /**
   * Follows the logged-in user's inbox: `sync`, then `resume,<epoch>,<seq>`
   * from the position kept (or `from`, e.g. one stored by the app; the
   * first time `resume,,0`). Entries come as `inbox` events, each seq once;
   * after a reconnect the client resumes by itself. On `stream_reset` it
   * emits `streamReset` and resumes as `inbox.onReset` says.
   */
  async resume(from?: InboxPosition): Promise<Resumed> {
    this.#inbox ??= new InboxStream(this.options.inbox?.position);
    if (from !== undefined) this.#inbox.moveTo(from);
    this.#inboxUser = this.#loginUser;
    this.#following = true;
    return this.#resume();
  }

  /** Epoch and highest seq processed; undefined until `resume()`. Store it to resume from there after a restart. */
  get inboxPosition(): InboxPosition | undefined {
    return this.#inbox?.position;
  }

  /**
   * `req,<id>,once,<key>,<fields...>` under a new key: the server runs the
   * command at most once. If the connection drops before the reply, the
   * client sends it again with the same key after its reconnect (with
   * `reconnect` on), and the repeat gets the first run's recorded reply.
   */
  requestOnce(...fields: string[]): Promise<string[]> {
    return this.requestWithKey(newOnceKey(), ...fields);
  }

  /** requestOnce with a key of the caller's (1-64 characters), e.g. one stored to retry after a restart of the app. */
  async requestWithKey(key: string, ...fields: string[]): Promise<string[]> {
    for (;;) {
      // while reconnecting, the new connection is not logged in yet: wait until it is
      if (this.#reconnecting && !this.#closedByUser) await this.#nextReconnect();
      try {
        return await this.request('once', key, ...fields);
      } catch (err) {
        if (!(err instanceof ConnectionClosedError) || !this.options.reconnect || this.#closedByUser) throw err;
        await this.#nextReconnect();
      }
    }
  }

  #nextReconnect(): Promise<void> {
    return new Promise<void>((resolve, reject) => this.#waiting.push({ resolve, reject }));
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
    this.#stopWaiting(new ConnectionClosedError('client destroyed'));
    this.drop();
  }

  /** Cuts the connection as a network failure would (a TCP reset): with `reconnect` on, the client comes back. */
  drop(): void {
    // a TLS socket has no TCP handle of its own to reset (resetAndDestroy throws)
    if (this.#socket instanceof tls.TLSSocket) this.#socket.destroy();
    else this.#socket.resetAndDestroy();
  }

  close(): Promise<void> {
    this.#closedByUser = true;
    this.#stopWaiting(new ConnectionClosedError('client closed'));
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
      { push: (fields) => this.#push(fields), serverError: (err) => this.emit('serverError', err), reply: (fields) => this.emit('reply', fields) },
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

  #push(fields: string[]): void {
    this.emit('push', fields);
    if (fields[0] !== INBOX_WORD || this.#inbox === undefined) return;
    const entry = this.#inbox.accept(fields);
    if (entry !== undefined) this.emit('inbox', entry);
  }

  async #resume(): Promise<Resumed> {
    const inbox = this.#inbox!;
    await this.request('sync');
    try {
      return await this.#resumeFrom(inbox, 'position');
    } catch (err) {
      if (!(err instanceof ReplyError) || err.type !== 'stream_reset') throw err;
      inbox.reset();
      this.emit('streamReset', err);
      if (this.options.inbox?.onReset === 'start') {
        try {
          return await this.#resumeFrom(inbox, 'position');
        } catch (again) {
          // the oldest entries are gone as well: live ones it is
          if (!(again instanceof ReplyError) || again.type !== 'stream_reset') throw again;
        }
      }
      return this.#resumeFrom(inbox, 'latest');
    }
  }

  async #resumeFrom(inbox: InboxStream, from: 'position' | 'latest'): Promise<Resumed> {
    const after = from === 'latest' ? 'latest' : inbox.position.seq;
    let resumed: Resumed | Error | undefined;
    // taken as it arrives: the entries right behind it are judged by its epoch and head
    const seen = (reply: string[]) => {
      try {
        resumed = inbox.resumed(reply, after);
        this.emit('resumed', resumed);
      } catch (err) {
        resumed = err as Error;
      }
    };
    await this.#protocol.requestSeen(inbox.resumeFields(from), seen);
    if (resumed instanceof Error || resumed === undefined) throw resumed ?? new Error('resume: no reply');
    return resumed;
  }

  #stopWaiting(err: Error | undefined): void {
    for (const w of this.#waiting.splice(0)) {
      if (err === undefined) w.resolve();
      else w.reject(err);
    }
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
          let resumeError: ReplyError | undefined;
          if (this.#following && this.#login !== undefined) {
            try {
              await this.#resume();
            } catch (err) {
              if (!(err instanceof ReplyError)) throw err;
              resumeError = err;
            }
          }
          if (resumeError === undefined) this.emit('reconnected', loginError);
          else this.emit('reconnected', loginError, resumeError);
          // requests waiting to be sent again go after the login and the resume
          this.#stopWaiting(loginError);
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
      const socket: tls.TLSSocket = tls.connect({ host, port, servername: net.isIP(host) ? undefined : host, rejectUnauthorized: !o.insecure, ca: o.ca }, () =>
        settle(socket),
      );
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
