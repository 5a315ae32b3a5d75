/** A WebSocket test client that queues incoming messages like RawConnection does. */
import WebSocket from 'ws';

export class WsConnection {
  readonly ws: WebSocket;
  readonly messages: string[] = [];
  closeCode: number | undefined;
  #cursor = 0;
  #waiters: (() => void)[] = [];

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data: Buffer) => {
      this.messages.push(data.toString('utf8'));
      this.#wake();
    });
    ws.on('close', (code) => {
      this.closeCode = code;
      this.#wake();
    });
    ws.on('error', () => {});
  }

  static open(url: string, options: { protocols?: string[]; origin?: string } = {}): Promise<WsConnection> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, options.protocols ?? [], options.origin === undefined ? {} : { origin: options.origin });
      ws.once('open', () => resolve(new WsConnection(ws)));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
  }

  send(payload: string | Buffer): void {
    this.ws.send(payload);
  }

  async next(timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (this.messages.length <= this.#cursor) {
      if (this.closeCode !== undefined) throw new Error(`closed (${this.closeCode}) after ${JSON.stringify(this.messages)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${JSON.stringify(this.messages)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.#waiters.push(() => (clearTimeout(t), r()));
      });
    }
    return this.messages[this.#cursor++]!;
  }

  async nextN(n: number): Promise<string[]> {
    const out = [];
    for (let i = 0; i < n; i++) out.push(await this.next());
    return out;
  }

  async ask(payload: string): Promise<string> {
    this.send(payload);
    return this.next();
  }

  /** Resolves with the close code once the close event came. */
  async closed(timeoutMs = 5000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (this.closeCode === undefined) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('still open');
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.#waiters.push(() => (clearTimeout(t), r()));
      });
    }
    return this.closeCode;
  }

  close(): void {
    this.ws.terminate();
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }
}

/** fetch with JSON in and out. */
export async function api(
  base: string,
  method: string,
  path: string,
  body?: unknown,
  token?: string,
): Promise<{ status: number; json: any; text: string; headers: Headers }> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  const res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text, headers: res.headers };
}
