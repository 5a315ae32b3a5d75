#!/usr/bin/env node
/**
 * The baseline for the benchmark: the least a Node server can do with this
 * framing. Plain node:net, frames decoded incrementally; every request is
 * answered with an empty frame. In relay mode (`sub,<channel>` then
 * `pub,<channel>,<data>`), a published frame is copied to every subscriber
 * of the channel and the publisher gets an empty frame; writes are coalesced
 * per event-loop turn. Usage: min-server.ts [--port P] [--relay]
 */
import net from 'node:net';
import { FrameDecoder, isFault } from '../src/wire/frame-decoder.ts';

const EMPTY = Buffer.from([0, 0, 0, 0, 0]);

class Conn {
  readonly socket: net.Socket;
  #out: Buffer[] = [];
  #scheduled = false;

  constructor(socket: net.Socket) {
    this.socket = socket;
  }

  write(frame: Buffer): void {
    this.#out.push(frame);
    if (!this.#scheduled) {
      this.#scheduled = true;
      process.nextTick(flush, this);
    }
  }

  flush(): void {
    this.#scheduled = false;
    const out = this.#out;
    this.#out = [];
    if (out.length === 1) this.socket.write(out[0]!);
    else this.socket.write(Buffer.concat(out));
  }
}

function flush(c: Conn): void {
  c.flush();
}

export function startMinServer(port: number, relay: boolean): Promise<net.Server> {
  const channels = new Map<string, Set<Conn>>();
  const server = net.createServer({ noDelay: true }, (socket) => {
    const conn = new Conn(socket);
    const decoder = new FrameDecoder(1 << 20);
    let subscribed: string | undefined;
    socket.on('data', (chunk: Buffer) => {
      decoder.push(chunk);
      for (let f = decoder.read(); f !== undefined; f = decoder.read()) {
        if (isFault(f)) {
          socket.destroy();
          return;
        }
        if (relay && f.length > 4 && f[0] === 0x70 /* p */) {
          const second = f.indexOf(0x2c, 4);
          const subs = channels.get(f.toString('latin1', 4, second));
          if (subs !== undefined) {
            const frame = Buffer.allocUnsafe(5 + f.length);
            frame.writeUInt32BE(f.length, 0);
            frame[4] = 0;
            f.copy(frame, 5);
            for (const s of subs) s.write(frame);
          }
        } else if (relay && f.length > 4 && f[0] === 0x73 /* s */) {
          subscribed = f.toString('latin1', 4);
          let subs = channels.get(subscribed);
          if (subs === undefined) channels.set(subscribed, (subs = new Set()));
          subs.add(conn);
        }
        conn.write(EMPTY);
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      if (subscribed !== undefined) channels.get(subscribed)?.delete(conn);
    });
  });
  return new Promise((resolve) => server.listen({ port, host: '127.0.0.1' }, () => resolve(server)));
}

if (import.meta.main) {
  const argv = process.argv.slice(2);
  const port = Number(argv[argv.indexOf('--port') + 1] ?? 0) || 0;
  const server = await startMinServer(port, argv.includes('--relay'));
  console.log(JSON.stringify({ msg: 'listening', port: (server.address() as net.AddressInfo).port }));
  process.on('SIGTERM', () => process.exit(0));
}
