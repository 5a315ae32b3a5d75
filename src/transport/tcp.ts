import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { FrameDecoder } from '../wire/frame-decoder.ts';
import { CommandError } from '../core/errors.ts';
import type { Link } from '../core/link.ts';
import { OutFrame } from '../core/out-frame.ts';
import { Session } from '../core/session.ts';
import { WriteBatch } from './write-batch.ts';
import type { ServerCore } from '../core/server-core.ts';

/** How long a closing connection may take to flush before it is destroyed. */
const CLOSE_GRACE_MS = 2000;


/** A framed byte stream (TCP or TLS socket) as a session's link. */
class SocketLink implements Link {
  readonly transport: string;
  readonly remoteAddress: string;
  readonly #socket: net.Socket;
  readonly #decoder: FrameDecoder;
  #session!: Session;
  #batch!: WriteBatch;
  #closed = false;
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
    this.#batch = new WriteBatch((bytes, done) => socket.write(bytes, done), session.counters);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', () => session.close());
    // the peer is done: stop routing pushes here now, not when the socket finally closes
    socket.on('end', () => session.close());
    socket.on('close', () => session.close());
  }

  write(frame: OutFrame, written?: (err?: Error | null) => void): void {
    if (this.#closed) {
      written?.(new Error('connection closed'));
      return;
    }
    this.#batch.add(frame.bytes, written);
  }

  pendingBytes(): number {
    return this.#socket.writableLength + this.#batch.bytes;
  }

  setReading(on: boolean): void {
    if (this.#closed) return;
    if (on) this.#socket.resume();
    else this.#socket.pause();
  }

  onDrain(cb: () => void): void {
    this.#batch.flush();
    if (this.#socket.writableLength === 0) queueMicrotask(cb);
    else this.#socket.once('drain', cb);
  }

  partialSince(): number {
    return this.#partialSince;
  }

  close(): void {
    if (this.#closed) return;
    this.#batch.flush();
    this.#closed = true;
    this.#decoder.release(); // a half-received frame's memory goes back now, not at some later GC
    const socket = this.#socket;
    socket.resume(); // read and discard until the peer goes, so our last frame is not reset away
    socket.end();
    setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
  }

  #onData(chunk: Buffer): void {
    if (this.#closed) return;
    const decoder = this.#decoder;
    const session = this.#session;
    decoder.push(chunk);
    session.counters.bytesIn += chunk.length;
    let completed = false;
    // replies to this read leave with one write at its end, no tick needed
    const batch = this.#batch;
    batch.holding = true;
    while (decoder.next()) {
      completed = true;
      session.receive(decoder.frameBuffer, decoder.frameStart, decoder.frameEnd);
      if (this.#closed) break;
    }
    batch.holding = false;
    if (!batch.scheduled) batch.flush();
    if (this.#closed) return;
    const fault = decoder.fault;
    if (fault !== undefined) {
      session.fatal(new CommandError(fault.fault, fault.info, true));
      return;
    }
    if (completed) session.lastActive = performance.now();
    if (decoder.pending === 0) this.#partialSince = 0;
    else if (completed || this.#partialSince === 0) this.#partialSince = performance.now();
  }
}

export type TcpListener = { readonly server: net.Server; readonly port: number; readonly transport: string };

/** Listens on `--host`/`--port` (TLS when a certificate is given) and turns connections into sessions. */
export async function listenTcp(core: ServerCore): Promise<TcpListener> {
  const { tls: tlsFiles, host, port, maxRequest } = core.options;
  const transport = tlsFiles === undefined ? 'tcp' : 'tls';
  const onSocket = (socket: net.Socket) => accept(core, socket, transport, maxRequest);
  const server =
    tlsFiles === undefined
      ? net.createServer({ noDelay: true }, onSocket)
      : tls.createServer({ cert: readFileSync(tlsFiles.cert), key: readFileSync(tlsFiles.key), noDelay: true }, onSocket);
  server.on('tlsClientError', () => {}); // a failed handshake concerns that client only
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

function accept(core: ServerCore, socket: net.Socket, transport: string, maxRequest: number): void {
  socket.setNoDelay(true);
  const address = socket.remoteAddress ?? 'unknown';
  if (!core.admit(address)) {
    socket.on('error', () => {});
    socket.end(OutFrame.of(new CommandError('too_many_connections').fields()).bytes);
    setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
    return;
  }
  const link = new SocketLink(socket, transport, maxRequest);
  const session = new Session(core, link);
  core.add(session);
  link.start(session);
}
