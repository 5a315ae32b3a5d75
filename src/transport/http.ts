/**
 * The HTTP gateway (GATEWAYS.md sections 2 to 5): fastify serving the
 * modules' routes, health, metrics and the browser client, on the same
 * process and sessions as TCP. WebSocket upgrades on `/ws` go to ws.ts.
 * Routes come from modules, so after a SIGHUP reload a new fastify instance
 * is built and swapped in under the same listening server.
 */
import http from 'node:http';
import https from 'node:https';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Registry } from 'prom-client';
import { CommandError } from '../core/errors.ts';
import type { HttpRequest, HttpRoute } from '../core/module-api.ts';
import type { ServerCore } from '../core/server-core.ts';
import { createMetrics } from '../core/metrics.ts';
import { wsAcceptor, WS_PATH, type WsAcceptor } from './ws.ts';

/** Error types to HTTP statuses. */
export const STATUS: Readonly<Record<string, number>> = {
  syntax: 400,
  invalid_name: 400,
  name_too_short: 400,
  password_too_short: 400,
  invalid_room: 400,
  not_logged_in: 401,
  wrong_user_or_password: 401,
  not_in_room: 403,
  not_friends: 403,
  user_not_found: 404,
  command_not_found: 404,
  no_request: 404,
  name_taken: 409,
  already_friends: 409,
  mailbox_full: 409,
  request_too_long: 413,
  too_many_attempts: 429,
  rate_limited: 429,
  unhandled: 500,
  too_many_connections: 503,
  shutdown: 503,
};

const WEB_DIR = resolve(import.meta.dirname, '../../web');
const WEB_BUILD = join(WEB_DIR, 'dist');
const WEB_TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.map': 'application/json', '.svg': 'image/svg+xml', '.png': 'image/png' };

const QUIET = new Set(['error', 'fatal', 'silent']);

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;
export type Listener = { transport: 'ws' | 'http'; port: number };
export type Gateways = { listeners: Listener[]; wsPort: number | undefined; close(): Promise<void> };

export async function startGateways(core: ServerCore, isReady: () => boolean): Promise<Gateways> {
  const { wsPort, httpPort, host, tls } = core.options;
  if (wsPort === undefined && httpPort === undefined) return { listeners: [], wsPort: undefined, close: async () => {} };
  const registry = createMetrics(core);
  const servers: http.Server[] = [];
  const listeners: Listener[] = [];
  const ws = wsPort === undefined ? undefined : wsAcceptor(core, () => listeners.filter((l) => l.transport === 'http').map((l) => l.port));
  let app: { instance: FastifyInstance; handler: Handler } | undefined;
  const info = { wsPort: undefined as number | undefined };
  const rebuild = async () => {
    const next = await buildApp(core, registry, isReady, info);
    const old = app;
    app = next;
    await old?.instance.close().catch(() => undefined);
  };
  await rebuild();
  core.onModulesLoaded(() => void rebuild().catch((err: unknown) => core.log.error({ err }, 'could not rebuild the HTTP routes')));
  const serveHttp: Handler = (req, res) => app!.handler(req, res);
  const listen = async (port: number, withHttp: boolean, withWs: WsAcceptor | undefined): Promise<number> => {
    const onRequest: Handler = withHttp ? serveHttp : (_req, res) => res.writeHead(426, { 'content-type': 'text/plain' }).end('use a WebSocket on /ws\n');
    const server = tls === undefined ? http.createServer(onRequest) : https.createServer({ cert: readFileSync(tls.cert), key: readFileSync(tls.key) }, onRequest);
    if (withWs !== undefined) server.on('upgrade', (req, socket, head) => withWs.handleUpgrade(req, socket, head));
    else server.on('upgrade', (_req, socket) => socket.destroy());
    server.on('clientError', (_err, socket) => socket.destroy());
    await new Promise<void>((ok, fail) => {
      server.once('error', fail);
      server.listen({ host, port }, () => (server.off('error', fail), ok()));
    });
    servers.push(server);
    return (server.address() as AddressInfo).port;
  };
  if (wsPort !== undefined) {
    const sameServer = httpPort === undefined || httpPort === wsPort;
    const port = await listen(wsPort, sameServer, ws);
    info.wsPort = port;
    listeners.push({ transport: 'ws', port });
    if (sameServer) listeners.push({ transport: 'http', port });
  }
  if (httpPort !== undefined && httpPort !== wsPort) listeners.push({ transport: 'http', port: await listen(httpPort, true, undefined) });
  return {
    listeners,
    wsPort: info.wsPort,
    async close() {
      ws?.close();
      await Promise.all(servers.map((s) => new Promise((r) => (s.close(r), s.closeAllConnections()))));
      await app?.instance.close().catch(() => undefined);
    },
  };
}

async function buildApp(core: ServerCore, registry: Registry, isReady: () => boolean, info: { wsPort: number | undefined }): Promise<{ instance: FastifyInstance; handler: Handler }> {
  let handler: Handler | undefined;
  const app: FastifyInstance = Fastify({
    // per-request lines are info level: keep them out unless the operator asks for less than warn
    loggerInstance: core.log.child({ component: 'http' }, { level: QUIET.has(core.options.logLevel) ? core.options.logLevel : 'warn' }) as unknown as FastifyBaseLogger,
    bodyLimit: core.options.maxRequest,
    serverFactory: (h) => {
      handler = h as Handler;
      return http.createServer();
    },
  });
  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => sendError(core, reply, err, req));
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: 'command_not_found', info: `no route ${req.method} ${req.url.split('?')[0]}` }));
  app.get('/healthz', (_req, reply) => reply.type('text/plain; charset=utf-8').send('ok'));
  app.get('/readyz', (_req, reply) => (isReady() ? reply.type('text/plain; charset=utf-8').send('ready') : reply.code(503).type('text/plain; charset=utf-8').send('not ready')));
  app.get('/metrics', async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()));
  app.get('/api/info', () => ({ version: core.api.version, protocol: core.api.protocolVersion, ws: info.wsPort === undefined ? null : { port: info.wsPort, path: WS_PATH }, tls: core.options.tls !== undefined }));
  mountWebClient(app);
  const seen = new Set<string>();
  for (const m of core.modules) {
    for (const route of m.def.routes ?? []) {
      const key = `${route.method} ${route.path}`;
      if (seen.has(key)) {
        core.log.error({ module: m.name, route: key }, 'route already mounted by another module; skipped');
        continue;
      }
      seen.add(key);
      mountRoute(core, app, route);
    }
  }
  await app.ready();
  return { instance: app, handler: handler! };
}

function mountRoute(core: ServerCore, app: FastifyInstance, route: HttpRoute): void {
  app.route({
    method: route.method,
    url: route.path,
    handler: async (request, reply) => {
      const req: HttpRequest = {
        method: request.method,
        url: request.url,
        params: request.params as Record<string, string>,
        query: request.query as Record<string, string | undefined>,
        body: request.body,
        headers: request.headers,
        remoteAddress: request.socket.remoteAddress ?? 'unknown',
      };
      const out = await route.handler(req, core.api);
      reply.code(out.status ?? 200);
      for (const [k, v] of Object.entries(out.headers ?? {})) reply.header(k, v);
      if (out.body === undefined) return reply.send();
      if (typeof out.body === 'string') return reply.type('text/plain; charset=utf-8').send(out.body);
      return reply.type('application/json; charset=utf-8').send(JSON.stringify(out.body));
    },
  });
}

function sendError(core: ServerCore, reply: FastifyReply, err: Error & { statusCode?: number; code?: string }, req: FastifyRequest): FastifyReply {
  if (err instanceof CommandError) {
    return reply.code(STATUS[err.type] ?? 400).send({ error: err.type, info: err.info });
  }
  const status = err.statusCode ?? 500;
  if (status === 413) return reply.code(413).send({ error: 'request_too_long', info: `the body exceeds ${core.options.maxRequest} bytes` });
  if (status >= 400 && status < 500) return reply.code(status).send({ error: 'syntax', info: err.message });
  core.log.error({ err, url: req.url }, 'unhandled error in an HTTP route');
  return reply.code(500).send({ error: 'unhandled', info: 'internal server error' });
}

/** The browser client: web/index.html, web/app.css and the built modules under web/dist (served as /js/...). */
function mountWebClient(app: FastifyInstance): void {
  const send = (reply: FastifyReply, path: string) => {
    if (!existsSync(path)) return reply.code(404).send({ error: 'command_not_found', info: 'the browser client is not built (npm run build:web)' });
    const ext = path.slice(path.lastIndexOf('.'));
    return reply.type(WEB_TYPES[ext] ?? 'application/octet-stream').header('cache-control', 'no-cache').send(readFileSync(path));
  };
  app.get('/', (_req, reply) => send(reply, join(WEB_DIR, 'index.html')));
  app.get('/app.css', (_req, reply) => send(reply, join(WEB_DIR, 'app.css')));
  app.get('/js/*', (req, reply) => {
    const path = resolve(WEB_BUILD, (req.params as { '*': string })['*']);
    if (!path.startsWith(`${WEB_BUILD}/`) || !path.endsWith('.js')) return reply.code(404).send({ error: 'command_not_found', info: 'no such file' });
    return send(reply, path);
  });
}
