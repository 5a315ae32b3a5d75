/**
 * A TCP relay in front of a server (Redis, say) that hands what the server
 * sends on to the client `delayMs` late, in order; what the client sends
 * goes through at once. One node of a cluster pointed at it hears the bus
 * later than the others, as over a slower network: races that timing
 * hides on one machine happen every time.
 */
import net from 'node:net';

export type SlowLink = { readonly url: string; close(): Promise<void> };

export async function slowLink(target: { host?: string; port: number }, delayMs: number, scheme = 'redis'): Promise<SlowLink> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: target.host ?? '127.0.0.1', port: target.port });
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    // every chunk waits as long, so they keep their order
    upstream.on('data', (chunk) => void setTimeout(() => client.destroyed || client.write(chunk), delayMs));
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', () => {
        sockets.delete(s);
        end();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `${scheme}://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
