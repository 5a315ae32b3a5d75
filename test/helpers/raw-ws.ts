/** A WebSocket client at the byte level, for tests that must send what no library sends (half frames, bad UTF-8, a Close in the same write as a request). */
import net from 'node:net';
import { randomBytes } from 'node:crypto';

export type ServerFrame = { fin: boolean; opcode: number; payload: Buffer };

/** One masked client frame. */
export function clientFrame(opcode: number, payload: Buffer | string, fin = true): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const n = data.length;
  const head =
    n < 126
      ? Buffer.from([0, 0x80 | n])
      : n < 65536
        ? Buffer.from([0, 0x80 | 126, n >> 8, n & 255])
        : Buffer.concat([Buffer.from([0, 0x80 | 127]), Buffer.from(new BigUint64Array([BigInt(n)]).buffer).reverse()]);
  head[0] = (fin ? 0x80 : 0) | opcode;
  const mask = randomBytes(4);
  const masked = Buffer.from(data);
  for (let i = 0; i < n; i++) masked[i] = masked[i]! ^ mask[i & 3]!;
  return Buffer.concat([head, mask, masked]);
}

export const text = (payload: Buffer | string, fin = true) => clientFrame(1, payload, fin);
export const closeWith = (code: number, reason: Buffer | string = '') =>
  clientFrame(8, Buffer.concat([Buffer.from([code >> 8, code & 255]), Buffer.from(reason)]));

/** An open raw connection: the handshake's answer, then the server's frames as they come. */
export class RawWs {
  readonly socket: net.Socket;
  /** The status line and headers of the handshake's answer. */
  head = '';
  readonly frames: ServerFrame[] = [];
  closed = false;
  #buffer = Buffer.alloc(0);
  #waiters: (() => void)[] = [];

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
  }

  /** Sends a handshake (extra or replaced headers in `headers`, a null value drops one) and waits for the answer's head. */
  static async open(
    port: number,
    options: { path?: string; headers?: Record<string, string | null>; version?: string; localAddress?: string } = {},
  ): Promise<RawWs> {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: options.localAddress });
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const ws = new RawWs(socket);
    const headers: Record<string, string | null> = {
      Host: `127.0.0.1:${port}`,
      Upgrade: 'websocket',
      Connection: 'Upgrade',
      'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
      'Sec-WebSocket-Version': '13',
      ...options.headers,
    };
    const lines = Object.entries(headers)
      .filter(([, v]) => v !== null)
      .map(([k, v]) => `${k}: ${v}\r\n`);
    socket.write(`GET ${options.path ?? '/ws'} HTTP/${options.version ?? '1.1'}\r\n${lines.join('')}\r\n`);
    await ws.until(() => ws.head !== '' || ws.closed);
    return ws;
  }

  get status(): number {
    return Number(this.head.split(' ')[1]);
  }

  write(...frames: Buffer[]): void {
    this.socket.write(Buffer.concat(frames));
  }

  /** Waits until `done()` holds (checked on each arrival). */
  async until(done: () => boolean, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`timed out; head ${JSON.stringify(this.head)}, frames ${JSON.stringify(this.frames.map(describe))}, closed ${this.closed}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.#waiters.push(() => (clearTimeout(t), r()));
      });
    }
  }

  /** The text of every data frame, and `close <code>` for a Close. */
  get texts(): string[] {
    return this.frames.map(describe);
  }

  close(): void {
    this.socket.destroy();
  }

  #onData(chunk: Buffer): void {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    if (this.head === '') {
      const end = this.#buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      this.head = this.#buffer.subarray(0, end).toString('latin1');
      this.#buffer = this.#buffer.subarray(end + 4);
      if (!this.head.startsWith('HTTP/1.1 101')) this.#buffer = Buffer.alloc(0); // a refusal's body is not frames
    }
    for (;;) {
      const b = this.#buffer;
      if (b.length < 2) break;
      if ((b[1]! & 0x80) !== 0) throw new Error('the server sent a masked frame');
      let n = b[1]! & 0x7f;
      let at = 2;
      if (n === 126) {
        if (b.length < 4) break;
        n = b.readUInt16BE(2);
        at = 4;
      } else if (n === 127) {
        if (b.length < 10) break;
        n = Number(b.readBigUInt64BE(2));
        at = 10;
      }
      if (b.length < at + n) break;
      this.frames.push({ fin: (b[0]! & 0x80) !== 0, opcode: b[0]! & 0x0f, payload: Buffer.from(b.subarray(at, at + n)) });
      this.#buffer = b.subarray(at + n);
    }
    this.#wake();
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }
}

function describe(f: ServerFrame): string {
  if (f.opcode === 8) return `close ${f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 'none'}`;
  if (f.opcode === 10) return `pong ${f.payload.toString('utf8')}`;
  return f.payload.toString('utf8');
}
