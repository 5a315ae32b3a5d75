/**
 * The WebSocket transport (GATEWAYS.md section 1): one message is one
 * payload; replies and pushes go back as text messages. Sessions are the
 * same as over TCP: the link below is all that differs.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { CommandError } from '../core/errors.ts';
import type { Link } from '../core/link.ts';
import { OutFrame } from '../core/out-frame.ts';
import { Session } from '../core/session.ts';
import { WriteBatch } from './write-batch.ts';
import type { ServerCore } from '../core/server-core.ts';

export const WS_PATH = '/ws';
export const SUBPROTOCOL = 'textserver.v1';
const CLOSE_GRACE_MS = 2000;
const CLOSE_CODES = { fatal: 1008, shutdown: 1001, normal: 1000 } as const;

/**
 * Writes its own server-to-client frames (unmasked text frames need no
 * state), batched per event-loop turn into one socket write like TCP;
 * the ws library handles the handshake, the client's frames, pings and close.
 */
class WsLink implements Link {
  readonly transport = 'ws';
  readonly remoteAddress: string;
  readonly #ws: WebSocket;
  readonly #socket: Duplex;
  readonly #batch: WriteBatch;
  #closed = false;

  constructor(ws: WebSocket, socket: Duplex, remoteAddress: string, counters: { framesOut: number; bytesOut: number }) {
    this.#ws = ws;
    this.#socket = socket;
    this.remoteAddress = remoteAddress;
    this.#batch = new WriteBatch((bytes, done) => socket.write(bytes, done), counters);
  }

  write(frame: OutFrame, written?: (err?: Error | null) => void): void {
    if (this.#closed) {
      written?.(new Error('connection closed'));
      return;
    }
    this.#batch.add(frame.wsBytes, written);
  }

  pendingBytes(): number {
    return this.#ws.bufferedAmount + this.#batch.bytes;
  }

  setReading(on: boolean): void {
    if (this.#closed) return;
    if (on) this.#ws.resume();
    else this.#ws.pause();
  }

  onDrain(cb: () => void): void {
    this.#batch.flush();
    if (this.#ws.bufferedAmount === 0) queueMicrotask(cb);
    else this.#socket.once('drain', cb);
  }

  partialSince(): number {
    return 0; // the ws library assembles frames; a stalled one ends with the idle timeout
  }

  close(reason: 'fatal' | 'shutdown' | 'normal'): void {
    if (this.#closed) return;
    this.#batch.flush();
    this.#closed = true;
    this.#ws.close(CLOSE_CODES[reason]);
    setTimeout(() => this.#ws.terminate(), CLOSE_GRACE_MS).unref();
  }
}

/**
 * Is this browser origin allowed? No Origin header (not a browser) is always
 * allowed. Without --ws-origins, only pages of the HTTP gateway itself: the
 * host the client asked for, on the gateway's port (or this port).
 */
export function originAllowed(req: IncomingMessage, allowed: readonly string[], gatewayPorts: readonly number[]): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  if (allowed.length > 0) return allowed.includes(origin) || allowed.includes('*');
  try {
    const from = new URL(origin);
    const asked = new URL(`http://${req.headers.host ?? ''}`);
    const port = Number(from.port || (from.protocol === 'https:' ? 443 : 80));
    return from.hostname === asked.hostname && (gatewayPorts.includes(port) || from.host === req.headers.host);
  } catch {
    return false;
  }
}

export type WsAcceptor = { handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void; close(): void };

/** Upgrades `/ws` requests into sessions; anything else is refused with an HTTP status. */
export function wsAcceptor(core: ServerCore, gatewayPorts: () => readonly number[]): WsAcceptor {
  const { maxRequest, wsOrigins } = core.options;
  const wss = new WebSocketServer({
    noServer: true,
    // ws refuses (code 1009) before buffering past this; up to it we answer request_too_long ourselves
    maxPayload: maxRequest + 64 * 1024,
    perMessageDeflate: false,
    skipUTF8Validation: true, // invalid UTF-8 is a nonfatal syntax error here, not a close
    handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
  });
  const refuse = (socket: Duplex, status: string) => {
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  };
  return {
    handleUpgrade(req, socket, head) {
      socket.on('error', () => {});
      const path = (req.url ?? '/').split('?')[0];
      if (path !== WS_PATH) return refuse(socket, '404 Not Found');
      if (!originAllowed(req, wsOrigins, gatewayPorts())) return refuse(socket, '403 Forbidden');
      wss.handleUpgrade(req, socket, head, (ws) => accept(core, ws, socket, req.socket.remoteAddress ?? 'unknown', maxRequest));
    },
    close() {
      wss.close();
    },
  };
}

function accept(core: ServerCore, ws: WebSocket, socket: Duplex, address: string, maxRequest: number): void {
  if (!core.admit(address)) {
    ws.send(OutFrame.of(new CommandError('too_many_connections').fields()).payload);
    ws.close(CLOSE_CODES.fatal);
    return;
  }
  const link = new WsLink(ws, socket, address, core.counters);
  const session = new Session(core, link);
  core.add(session);
  ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
    const bytes = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    session.lastActive = performance.now();
    core.counters.bytesIn += bytes.length;
    if (bytes.length > maxRequest) {
      session.fatal(new CommandError('request_too_long', `message of ${bytes.length} bytes exceeds the limit of ${maxRequest}`));
      return;
    }
    session.receive(bytes);
  });
  ws.on('error', () => session.close());
  ws.on('close', () => session.close());
}
