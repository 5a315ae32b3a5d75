/**
 * The HTTP gateway's listeners (GATEWAYS.md sections 1 and 2): the HTTP (or
 * HTTPS) servers that carry the routes of app.ts and the WebSocket upgrades
 * of transport/ws.ts, on the same process and sessions as TCP.
 *
 * Every socket is admitted by the session registry as it arrives (HTTP
 * keep-alive, half-sent requests and the WebSockets they become count
 * against the connection limits like TCP ones); a TLS handshake and a
 * request (head and body) must complete within `--request-timeout`.
 * Routes come from modules, so after a SIGHUP reload a new fastify instance
 * is built and swapped in under the same listening servers.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createMetrics } from '../core/metrics.ts';
import type { ServerCore } from '../core/server-core.ts';
import { tlsServerOptions } from '../transport/tls-options.ts';
import { pathOf, wsAcceptor, WS_PATH, type WsAcceptor } from '../transport/ws.ts';
import { buildApp, type App, type Handler } from './app.ts';
import { fairRequests } from './fair-requests.ts';
import { originPolicy } from './origins.ts';

export type Listener = { transport: 'ws' | 'http'; port: number };
export type Gateways = {
  listeners: Listener[];
  wsPort: number | undefined;
  /** HTTP requests being answered now: a graceful stop waits for them (within its drain time). */
  inFlight(): number;
  close(): Promise<void>;
};

const JSON_TYPE = { 'content-type': 'application/json; charset=utf-8' };

/** What node refuses before a request reaches a route, with the status node would use. */
const CLIENT_ERRORS: Record<string, { status: number; error: string; info: string }> = {
  HPE_HEADER_OVERFLOW: { status: 431, error: 'request_too_long', info: 'the request head is too large' },
  HPE_CHUNK_EXTENSIONS_OVERFLOW: { status: 413, error: 'request_too_long', info: 'the chunk extensions are too large' },
  ERR_HTTP_REQUEST_TIMEOUT: { status: 408, error: 'timeout', info: 'the request did not arrive within --request-timeout' },
};

/**
 * A request node could not parse (or that timed out): answered as node
 * would, with the `{"error","info"}` body every other error has, unless a
 * reply to it already started or the socket cannot be written.
 */
function clientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (socket.writable && inFlight?.headersSent !== true && err.code !== 'ECONNRESET') {
    const { status, error, info } = CLIENT_ERRORS[err.code ?? ''] ?? { status: 400, error: 'syntax', info: 'the request is not valid HTTP/1.1' };
    const body = JSON.stringify({ error, info });
    socket.write(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/**
 * RFC 9112 section 3.2: an HTTP/1.1 request has exactly one Host header (an
 * HTTP/1.0 one may have none); two are 400 whatever the version. Node keeps
 * only the first of two, and answers a missing one with an empty body.
 */
export function oneHost(req: http.IncomingMessage): boolean {
  const hosts = req.headersDistinct.host?.length ?? 0;
  return hosts === 1 || (hosts === 0 && req.httpVersionMajor === 1 && req.httpVersionMinor === 0);
}

export async function startGateways(core: ServerCore, isReady: () => boolean): Promise<Gateways> {
  const { wsPort, httpPort, host, tls, maxRequest, requestTimeoutMs, wsOrigins } = core.options;
  if (wsPort === undefined && httpPort === undefined) return { listeners: [], wsPort: undefined, inFlight: () => 0, close: async () => {} };
  const registry = createMetrics(core);
  const servers: http.Server[] = [];
  const listeners: Listener[] = [];
  const pagePorts = () => listeners.filter((l) => l.transport === 'http').map((l) => l.port);
  const ws = wsPort === undefined ? undefined : wsAcceptor(core, originPolicy(wsOrigins, host, tls !== undefined, pagePorts));
  const info = { wsPort: undefined as number | undefined };
  let app: App = await buildApp(core, registry, isReady, info);
  // a reload's routes are built before its modules are put in force and swapped in with them:
  // no request reaches a disposed module's route, and routes that cannot be mounted fail the reload
  core.moduleSet.onPrepare(async (modules) => {
    const next = await buildApp(core, registry, isReady, info, modules);
    return {
      commit() {
        const old = app;
        app = next;
        void old.instance.close().catch(() => undefined);
      },
      abort: () => void next.instance.close().catch(() => undefined),
    };
  });

  let inFlight = 0;
  const finished = () => void inFlight--;
  const listen = async (port: number, withHttp: boolean, withWs: WsAcceptor | undefined): Promise<number> => {
    const fair = fairRequests((req, res) => {
      inFlight++;
      res.once('close', finished); // answered, or its connection gone
      if (!oneHost(req)) {
        res.shouldKeepAlive = false;
        const body = JSON.stringify({ error: 'syntax', info: 'an HTTP/1.1 request needs exactly one Host header' });
        return void res.writeHead(400, { ...JSON_TYPE, 'content-length': Buffer.byteLength(body) }).end(body);
      }
      // while draining, answered requests do not keep their connection for more
      if (core.sessions.draining) res.shouldKeepAlive = false;
      if (withWs !== undefined && pathOf(req) === WS_PATH) return withWs.serveHttp(req, res);
      if (withHttp) return app.handler(req, res);
      res.writeHead(404, JSON_TYPE).end(JSON.stringify({ error: 'command_not_found', info: `this port serves only the WebSocket, on ${WS_PATH}` }));
    });
    const onRequest: Handler = fair.handler;
    const options: http.ServerOptions = {
      headersTimeout: requestTimeoutMs,
      requestTimeout: requestTimeoutMs,
      // how often node looks for requests past those timeouts (its default is 30 s)
      connectionsCheckingInterval: Math.max(25, Math.min(1000, Math.floor(requestTimeoutMs / 4))),
      // only `Upgrade: websocket` on the WebSocket path switches protocols: any other (h2c) is a plain request
      shouldUpgradeCallback: (req) => withWs?.wants(req) === true,
      // node's own refusal of a request without Host has an empty body: oneHost answers it in our shape
      requireHostHeader: false,
    };
    const listener = tls === undefined ? 'http' : 'https';
    const server =
      tls === undefined ? http.createServer(options, onRequest) : https.createServer({ ...options, ...tlsServerOptions(tls, requestTimeoutMs) }, onRequest);
    // counted from the first byte, TLS handshake included; over a limit there is nothing to say it with yet
    server.on('connection', (socket: Socket) => {
      if (!core.sessions.admit(socket, listener)) socket.destroy();
    });
    if (tls !== undefined) server.on('tlsClientError', (_err, socket) => socket.destroy());
    server.on('clientError', clientError);
    if (withWs !== undefined) server.on('upgrade', (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
        fair.release(socket);
        withWs.handleUpgrade(req, socket, head);
      });
    // RFC 9110 section 10.1.1: refuse an oversize body before the client sends it
    server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
      const length = Number(req.headers['content-length']);
      if (length > maxRequest) {
        res
          .writeHead(413, { ...JSON_TYPE, connection: 'close' })
          .end(JSON.stringify({ error: 'request_too_long', info: `the body exceeds ${maxRequest} bytes` }));
        return;
      }
      res.writeContinue();
      onRequest(req, res);
    });
    await new Promise<void>((ok, fail) => {
      server.once('error', fail);
      server.listen({ host, port }, () => (server.off('error', fail), ok()));
    });
    server.on('error', (err) => core.log.error({ err }, 'listener error'));
    servers.push(server);
    return (server.address() as AddressInfo).port;
  };
  // one listener for both when HTTP has no port of its own, or the same fixed one; `0` for each asks
  // for two free ports, like any two listeners given 0
  const sameServer = wsPort !== undefined && (httpPort === undefined || (httpPort === wsPort && wsPort !== 0));
  if (wsPort !== undefined) {
    const port = await listen(wsPort, sameServer, ws);
    info.wsPort = port;
    listeners.push({ transport: 'ws', port });
    if (sameServer) listeners.push({ transport: 'http', port });
  }
  if (httpPort !== undefined && !sameServer) listeners.push({ transport: 'http', port: await listen(httpPort, true, undefined) });
  return {
    listeners,
    wsPort: info.wsPort,
    inFlight: () => inFlight,
    async close() {
      await Promise.all(servers.map((s) => new Promise((r) => (s.close(r), s.closeAllConnections()))));
      await app.instance.close().catch(() => undefined);
    },
  };
}
