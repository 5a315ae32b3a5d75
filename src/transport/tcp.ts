import net from 'node:net';
import tls from 'node:tls';
import { FrameDecoder } from '../wire/frame-decoder.ts';
import { CommandError } from '../core/errors.ts';
import type { Link } from '../core/link.ts';
import { OutFrame } from '../core/out-frame.ts';
import type { Session } from '../core/session.ts';
import { CLOSE_GRACE_MS, openSession } from '../core/sessions.ts';
import { SocketOutput } from './write-batch.ts';
import { tlsServerOptions } from './tls-options.ts';
import type { ServerCore } from '../core/server-core.ts';

/** A framed byte stream (TCP or TLS socket) as a session's link. */
class SocketLink implements Link {
  readonly transport: string;
  readonly remoteAddress: string;
  readonly #socket: net.Socket;
  readonly #decoder: FrameDecoder;
  #session!: Session;
  #out!: SocketOutput;
  #partialSince = 0;

  constructor(socket: net.Socket, transport: string, maxRequest: number) {
    this.#socket = socket;
    this.transport = transport;
    this.remoteAddress = socket.remoteAddress ?? 'unknown';
    this.#decoder = new FrameDecoder(maxRequest, true); // owns the socket's chunks: it may free them once copied
  }

  start(session: Session): void {
    this.#session = session;
    const socket = this.#socket;
    this.#out = new SocketOutput(socket, session.counters);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', () => session.close());
    // the peer is done: stop routing pushes here now, not when the socket finally closes
    socket.on('end', () => session.close());
    socket.on('close', () => session.close());
  }

  write(frame: OutFrame, written?: (err?: Error | null) => void): void {
    this.#out.write(frame.bytes, written);
  }

  pendingBytes(): number {
    return this.#out.pendingBytes();
  }

  setReading(on: boolean): void {
    this.#out.setReading(on);
  }

  onDrain(cb: () => void): void {
    this.#out.onDrain(cb);
  }

  partialSince(): number {
    return this.#partialSince;
  }

  close(): void {
    if (!this.#out.end()) return;
    this.#decoder.release(); // a half-received frame's memory goes back now, not at some later GC
    const socket = this.#socket;
    socket.resume(); // read and discard until the peer goes, so our last frame is not reset away
    socket.end();
    setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
  }

  #onData(chunk: Buffer): void {
    const out = this.#out;
    if (out.closed) return;
    const decoder = this.#decoder;
    const session = this.#session;
    decoder.push(chunk);
    session.counters.bytesIn += chunk.length;
    let completed = false;
    // replies to this read leave with one write at its end, no tick needed
    const batch = out.batch;
    batch.holding = true;
    while (decoder.next()) {
      completed = true;
      session.receive(decoder.frameBuffer, decoder.frameStart, decoder.frameEnd);
      if (out.closed) break;
    }
    batch.holding = false;
    if (!batch.scheduled) batch.flush();
    if (out.closed) return;
    const fault = decoder.fault;
    if (fault !== undefined) {
      session.fatal(new CommandError(fault.fault, fault.info, true));
      return;
    }
    if (completed) session.lastActive = performance.now();
    if (!decoder.inFrame) this.#partialSince = 0;
    else if (completed || this.#partialSince === 0) this.#partialSince = performance.now();
  }
}

export type TcpListener = { readonly server: net.Server; readonly port: number; readonly transport: string };

/**
 * Listens on `--host`/`--port` (TLS when a certificate is given) and turns
 * connections into sessions. Every socket is admitted (counted against the
 * connection limits) as it arrives, a TLS one before its handshake, which
 * must complete within the request timeout.
 */
export async function listenTcp(core: ServerCore): Promise<TcpListener> {
  const { tls: tlsFiles, host, port, maxRequest, requestTimeoutMs } = core.options;
  const transport = tlsFiles === undefined ? 'tcp' : 'tls';
  let server: net.Server;
  if (tlsFiles === undefined) {
    server = net.createServer({ noDelay: true }, (socket) => {
      if (core.sessions.admit(socket, transport)) accept(core, socket, transport, maxRequest);
      else refuse(socket, new CommandError('too_many_connections'));
    });
  } else {
    server = tls.createServer({ ...tlsServerOptions(tlsFiles, requestTimeoutMs), noDelay: true }, (socket) => accept(core, socket, transport, maxRequest));
    // before the handshake there is no way to say why: a refused socket is just closed
    server.on('connection', (raw: net.Socket) => {
      if (!core.sessions.admit(raw, transport)) raw.destroy();
    });
    // a failed or timed-out handshake concerns that client only; node leaves the socket open
    server.on('tlsClientError', (_err, socket) => socket.destroy());
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => core.log.error({ err }, 'listener error'));
  return { server, port: (server.address() as net.AddressInfo).port, transport };
}

/** Says why in one frame, then closes. */
function refuse(socket: net.Socket, err: CommandError): void {
  socket.on('error', () => {});
  socket.end(OutFrame.of(err.fields()).bytes);
  setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
}

function accept(core: ServerCore, socket: net.Socket, transport: string, maxRequest: number): void {
  socket.setNoDelay(true);
  const link = new SocketLink(socket, transport, maxRequest);
  const session = openSession(core, link);
  if (session === undefined) refuse(socket, new CommandError('shutdown'));
  else link.start(session);
}
