/**
 * The WebSocket transport (GATEWAYS.md section 1, RFC 6455): one message is
 * one payload; replies and pushes go back as text messages. Sessions are
 * the same as over TCP: the link below is all that differs. The HTTP
 * gateway hands over the upgrade requests it accepted (`wants`), and plain
 * requests to the WebSocket path (`serveHttp`).
 */
import { createHash } from 'node:crypto';
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { CommandError } from '../core/errors.ts';
import type { Link } from '../core/link.ts';
import type { OutFrame } from '../core/out-frame.ts';
import type { Session } from '../core/session.ts';
import { CLOSE_GRACE_MS, openSession } from '../core/sessions.ts';
import type { ServerCore } from '../core/server-core.ts';
import { currentTurn } from '../core/turns.ts';
import { closeFrame, pongFrame, WsFrameReader, type WsEvent } from './ws-frames.ts';
import { SocketOutput } from './write-batch.ts';

export const WS_PATH = '/ws';
export const SUBPROTOCOL = 'textserver.v1';
const CLOSE_CODES = { fatal: 1008, shutdown: 1001, normal: 1000 } as const;
const ACCEPT_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** base64 of 16 bytes (RFC 6455 section 4.1) */
const KEY = /^[A-Za-z0-9+/]{21}[AQgw]==$/;
/**
 * Frames of one connection read in one turn of the event loop; the rest of
 * what it sent waits (its socket paused) for the next turn. A message sent
 * as 1-byte fragments is 7 bytes a frame: a 64 KiB read holds 9,000 of them
 * and node reads up to 32 chunks at once, so without this 20 connections
 * doing so held every other client for seconds. Like TCP's 1024 requests.
 */
const TURN_FRAMES = 1024;

/**
 * Writes its frames batched per event-loop turn into one socket write, like
 * TCP. After its Close frame nothing else is written (RFC 6455 section
 * 5.5.1); replies queued before it leave first.
 */
class WsLink implements Link {
  readonly transport = 'ws';
  readonly remoteAddress: string;
  readonly #socket: Socket;
  readonly #reader: WsFrameReader;
  #session!: Session;
  /** Closed once our Close is out: no more frames. */
  #out!: SocketOutput;
  /** The peer's Close arrived (its code, undefined when it had none). */
  #peerClosed = false;
  #peerCode: number | undefined;
  /** A close code that overrides the session's reason (1002, 1007 from the reader). */
  #code: number | undefined;
  #partialSince = 0;
  /** The turn the reader's frame budget was last refilled in. */
  #turn = -1;
  /** Reading wanted by the session (backpressure), and held back by us while the turn's frame budget is spent. */
  #sessionReading = true;
  #yielding = false;
  readonly #maxOutbound: number;
  readonly #counters: { slowConsumers: number };

  constructor(socket: Socket, remoteAddress: string, maxRequest: number, maxOutbound: number, counters: { slowConsumers: number }) {
    this.#socket = socket;
    this.remoteAddress = remoteAddress;
    this.#reader = new WsFrameReader(maxRequest);
    this.#maxOutbound = maxOutbound;
    this.#counters = counters;
  }

  start(session: Session, head: Buffer): void {
    this.#session = session;
    const socket = this.#socket;
    this.#out = new SocketOutput(socket, session.counters);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', () => session.close());
    socket.on('end', () => session.close());
    socket.on('close', () => session.close());
    socket.resume();
    if (head.length > 0) this.#onData(head);
  }

  write(frame: OutFrame, written?: (err?: Error | null) => void): void {
    this.#out.write(frame.wsBytes, written);
  }

  pendingBytes(): number {
    return this.#out.pendingBytes();
  }

  setReading(on: boolean): void {
    this.#sessionReading = on;
    this.#out.setReading(on && !this.#yielding);
  }

  onDrain(cb: () => void): void {
    this.#out.onDrain(cb);
  }

  partialSince(): number {
    return this.#partialSince;
  }

  close(reason: 'fatal' | 'shutdown' | 'normal'): void {
    if (!this.#out.end()) return;
    const socket = this.#socket;
    if (socket.destroyed) return;
    // answering the peer's Close echoes its code; otherwise ours says why
    socket.write(closeFrame(this.#peerClosed ? this.#peerCode : (this.#code ?? CLOSE_CODES[reason])));
    // the server closes TCP first (RFC 6455 section 7.1.1); a peer's Close still in flight is read and dropped
    socket.end();
    socket.resume();
    setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
  }

  #onData(chunk: Buffer): void {
    this.#reader.push(chunk);
    if (!this.#out.closed) this.#session.counters.bytesIn += chunk.length;
    if (!this.#yielding) this.#readFrames();
  }

  /** The next turn: the frames held back, then reading again (unless the session holds it). */
  readonly #resumeFrames = () => {
    this.#yielding = false;
    this.#readFrames();
    if (this.#yielding || this.#socket.destroyed) return;
    // after our Close the socket is read (and discarded) until the peer goes, whatever the session wanted
    if (this.#out.closed) this.#socket.resume();
    else this.#out.setReading(this.#sessionReading);
  };

  #readFrames(): void {
    const reader = this.#reader;
    const session = this.#session;
    const now = currentTurn();
    if (this.#turn !== now) {
      this.#turn = now;
      reader.frameBudget = TURN_FRAMES;
    }
    let completed = false;
    const batch = this.#out.batch;
    batch.holding = true; // replies to this read leave with one write at its end
    for (let event = reader.next(); event !== undefined; event = reader.next()) {
      if (event.kind === 'close') {
        this.#onPeerClose(event);
        break;
      }
      if (this.#out.closed) continue; // after our Close: discard until theirs
      if (event.kind === 'message') {
        completed = true;
        session.receive(event.data);
      } else if (event.kind === 'ping') {
        // a pong is written like any reply: within --max-outbound, or a client that pings and
        // never reads would grow its unsent pongs without bound (pings need no reading pause)
        const pong = pongFrame(event.data);
        const pending = this.#out.pendingBytes();
        if (pending + pong.length > this.#maxOutbound) {
          this.#counters.slowConsumers++;
          session.fatal(new CommandError('slow_consumer', String(pending)));
          continue; // closed: the rest of this read is discarded
        }
        batch.add(pong);
      }
    }
    batch.holding = false;
    if (!batch.scheduled) batch.flush();
    if (reader.heldBack) {
      this.#yielding = true;
      this.#socket.pause();
      setImmediate(this.#resumeFrames);
    }
    const fault = reader.fault;
    if (fault !== undefined) {
      if (this.#out.closed) this.#socket.destroy();
      else if (fault.code === 'too_long') session.fatal(new CommandError('request_too_long', `message of ${fault.size} bytes exceeds the limit`));
      else {
        this.#code = fault.code;
        session.close('fatal');
      }
      return;
    }
    if (this.#out.closed) return;
    if (completed) session.lastActive = performance.now();
    if (!reader.pending) this.#partialSince = 0;
    else if (completed || this.#partialSince === 0) this.#partialSince = performance.now();
  }

  #onPeerClose(event: Extract<WsEvent, { kind: 'close' }>): void {
    if (this.#out.closed) return; // they answered our Close
    this.#peerClosed = true;
    this.#peerCode = event.code;
    this.#session.close('normal');
  }
}

export type WsAcceptor = {
  /** Is this request a WebSocket handshake for us (an `Upgrade: websocket` on the WebSocket path)? */
  wants(req: IncomingMessage): boolean;
  handleUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void;
  /** A plain HTTP request to the WebSocket path. */
  serveHttp(req: IncomingMessage, res: ServerResponse): void;
};

function tokens(header: string | string[] | undefined): string[] {
  const text = Array.isArray(header) ? header.join(',') : (header ?? '');
  return text
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t !== '');
}

/** The subprotocols a handshake offers, as spelled (RFC 6455 section 4.1: tokens, case-sensitive). */
function offered(header: string | string[] | undefined): string[] {
  const text = Array.isArray(header) ? header.join(',') : (header ?? '');
  return text
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '');
}

export const pathOf = (req: IncomingMessage): string => (req.url ?? '/').split('?')[0]!;

/** Answers an upgrade request with an HTTP error instead of switching protocols. */
function refuse(socket: Socket, status: number, text: string, headers = ''): void {
  const body = `${text}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\n${headers}Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
}

/**
 * Upgrades WebSocket handshakes on WS_PATH into sessions. `originAllowed`
 * decides on a browser's `Origin` (GATEWAYS.md: `--ws-origins`, or the HTTP
 * gateway's own origins). Sockets were admitted by the HTTP listener.
 */
export function wsAcceptor(core: ServerCore, originAllowed: (origin: string | undefined) => boolean): WsAcceptor {
  const { maxRequest } = core.options;
  return {
    wants(req) {
      return pathOf(req) === WS_PATH && tokens(req.headers.upgrade).includes('websocket') && req.httpVersionMajor === 1 && req.httpVersionMinor >= 1;
    },
    handleUpgrade(req, socket, head) {
      socket.on('error', () => {});
      if (core.sessions.draining) return refuse(socket, 503, 'the server is stopping');
      if (!originAllowed(req.headers.origin)) return refuse(socket, 403, 'this origin may not open a WebSocket here (see --ws-origins)');
      if (req.method !== 'GET') return refuse(socket, 405, 'a WebSocket handshake is a GET', 'Allow: GET\r\n');
      // RFC 6455 section 4.2.1: the handshake carries the server's authority in one Host header
      if (req.headersDistinct.host?.length !== 1) return refuse(socket, 400, 'a WebSocket handshake needs exactly one Host header');
      const key = req.headers['sec-websocket-key'];
      if (typeof key !== 'string' || !KEY.test(key)) return refuse(socket, 400, 'missing or malformed Sec-WebSocket-Key');
      if (req.headers['sec-websocket-version'] !== '13') return refuse(socket, 426, 'WebSocket version 13 only', 'Sec-WebSocket-Version: 13\r\n');
      const link = new WsLink(socket, socket.remoteAddress ?? 'unknown', maxRequest, core.options.maxOutbound, core.counters);
      const session = openSession(core, link);
      if (session === undefined) return refuse(socket, 503, 'the server is stopping');
      const accept = createHash('sha1')
        .update(key + ACCEPT_GUID)
        .digest('base64');
      // compared exactly: the client fails a handshake whose answer names a subprotocol it did not offer
      // (RFC 6455 section 4.1), so `TextServer.V1` is not ours to answer as `textserver.v1`
      const protocol = offered(req.headers['sec-websocket-protocol']).includes(SUBPROTOCOL) ? `Sec-WebSocket-Protocol: ${SUBPROTOCOL}\r\n` : '';
      socket.setNoDelay(true);
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n${protocol}\r\n`);
      link.start(session, head);
    },
    serveHttp(req, res) {
      const text = (status: number, body: string, headers: Record<string, string> = {}) =>
        res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', ...headers }).end(`${body}\n`);
      if (req.httpVersionMajor === 1 && req.httpVersionMinor === 0) return void text(400, 'a WebSocket handshake needs HTTP/1.1');
      if (req.method !== 'GET' && req.method !== 'HEAD') return void text(405, 'a WebSocket handshake is a GET', { allow: 'GET, HEAD' });
      // RFC 9110 section 15.5.22: a 426 says what to upgrade to
      text(426, `use a WebSocket on ${WS_PATH}`, { upgrade: 'websocket', connection: 'Upgrade' });
    },
  };
}
