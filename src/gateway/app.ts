/**
 * The HTTP gateway's routes (GATEWAYS.md sections 2 to 5): fastify serving
 * the modules' routes, health, metrics and the browser client. Errors are
 * `{"error","info"}` with the status the error type declares (ErrorSpec),
 * so this file names no module's error types.
 */
import http from 'node:http';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Registry } from 'prom-client';
import { CommandError, httpStatus } from '../core/errors.ts';
import type { HttpRequest, HttpRoute } from '../core/module-api.ts';
import type { LoadedModule } from '../core/module-set.ts';
import type { ServerCore } from '../core/server-core.ts';
import { WS_PATH } from '../transport/ws.ts';
import { mountWebClient } from './web-client.ts';

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;
export type App = { readonly instance: FastifyInstance; readonly handler: Handler };

const QUIET = new Set(['error', 'fatal', 'silent']);
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'] as const;
/**
 * A path parameter longer than this is refused with 414 before any route
 * runs: far above every name a route takes (names 32, rooms 64), so a long
 * one still reaches its route and gets that route's own error.
 */
const MAX_PARAM_LENGTH = 1024;
/** Headers a route asked for on every reply, errors included (CORS). */
type RouteConfig = { headers?: Readonly<Record<string, string>> };

/** The app for a set of modules: the set in force at start, a candidate set on reload (built before it is put in force). */
export async function buildApp(
  core: ServerCore,
  registry: Registry,
  isReady: () => boolean,
  info: { wsPort: number | undefined },
  modules: readonly LoadedModule[] = core.modules,
): Promise<App> {
  let handler: Handler | undefined;
  const app: FastifyInstance = Fastify({
    // per-request lines are info level: keep them out unless the operator asks for less than warn
    loggerInstance: core.log.child(
      { component: 'http' },
      { level: QUIET.has(core.options.logLevel) ? core.options.logLevel : 'warn' },
    ) as unknown as FastifyBaseLogger,
    bodyLimit: core.options.maxRequest,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // what fastify refuses before routing (a bad %-escape, an overlong parameter) answers in the documented shape too
    frameworkErrors: (err, _req, reply) => frameworkError(reply, err),
    serverFactory: (h) => {
      handler = h as Handler;
      return http.createServer(); // never listens: the gateway's own servers call `handler`
    },
  });
  // GATEWAYS.md section 2 (JSON in; a bad body is 400 syntax): a body is JSON whatever Content-Type came
  // with it (fetch labels a string body text/plain), and an empty one is no body (a bodiless POST
  // that says application/json), rather than 415 or 400 before the route could answer
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (req, text, done) => {
    if ((text as string).trim() === '') return done(null, undefined);
    let body: unknown;
    try {
      body = JSON.parse(text as string);
    } catch {
      // labelled JSON and not JSON is a syntax error; other text is left to the route (which wants JSON or nothing)
      if (/json/i.test(req.headers['content-type'] ?? '')) return done(new CommandError('syntax', 'the body is not JSON'), undefined);
      return done(null, text);
    }
    // PROTOCOL.md: text that is not valid UTF-8 is a syntax error. JSON can spell such text as a lone
    // surrogate escape ("\ud800"); stored, it would become U+FFFD: another text than the one acknowledged
    if (!wellFormed(body)) return done(new CommandError('syntax', 'the body has a string that is not Unicode text (a lone surrogate escape)'), undefined);
    done(null, body);
  });
  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => sendError(core, reply, err, req));
  // headers a module route wants on every reply reach its 405s too (KFCR's CORS): by path pattern
  const pathHeaders: { pattern: RegExp; headers: Readonly<Record<string, string>> }[] = [];
  app.setNotFoundHandler((req, reply) => notFound(app, pathHeaders, req, reply));
  app.get('/healthz', (_req, reply) => reply.type('text/plain; charset=utf-8').send('ok'));
  app.get('/readyz', (_req, reply) =>
    isReady() ? reply.type('text/plain; charset=utf-8').send('ready') : reply.code(503).type('text/plain; charset=utf-8').send('not ready'),
  );
  // scrapes that arrive while one is being rendered share its text: rendering takes about 1 ms, so
  // a client pipelining /metrics had every other client wait about 1 ms per request it sent
  let rendering: Promise<string> | undefined;
  const render = () => (rendering ??= registry.metrics().finally(() => (rendering = undefined)));
  app.get('/metrics', async (_req, reply) => reply.type(registry.contentType).send(await render()));
  app.get('/api/info', () => ({
    version: core.api.version,
    protocol: core.api.protocolVersion,
    ws: info.wsPort === undefined ? null : { port: info.wsPort, path: WS_PATH },
    tls: core.options.tls !== undefined,
  }));
  mountWebClient(app);
  const seen = new Set<string>();
  for (const m of modules) {
    for (const route of m.runtime.routes) {
      const key = `${route.method} ${route.path}`;
      if (seen.has(key)) {
        core.log.error({ module: m.name, route: key }, 'route already mounted by another module; skipped');
        continue;
      }
      seen.add(key);
      mountRoute(core, app, route);
      if (route.headers !== undefined) pathHeaders.push({ pattern: pathPattern(route.path), headers: route.headers });
    }
  }
  await app.ready();
  return { instance: app, handler: handler! };
}

function mountRoute(core: ServerCore, app: FastifyInstance, route: HttpRoute): void {
  const config: RouteConfig = { headers: route.headers };
  app.route({
    method: route.method,
    url: route.path,
    config,
    handler: async (request, reply) => {
      const req: HttpRequest = {
        method: request.method,
        url: request.url,
        params: request.params as Record<string, string>,
        query: request.query as Record<string, string | undefined>,
        body: request.body,
        headers: distinctHeaders(request),
        remoteAddress: request.socket.remoteAddress ?? 'unknown',
      };
      const out = await route.handler(req, core.api);
      reply.code(out.status ?? 200);
      for (const [k, v] of Object.entries({ ...route.headers, ...out.headers })) reply.header(k, v);
      if (out.body === undefined) return reply.send();
      if (typeof out.body === 'string') return reply.type('text/plain; charset=utf-8').send(out.body);
      return reply.type('application/json; charset=utf-8').send(JSON.stringify(out.body));
    },
  });
}

/**
 * The request's headers, a field sent more than once as the list of its
 * values: node joins most repeats with ", " (and keeps only the first of
 * some), which would turn two `Idempotency-Key`s into one key nobody sent.
 */
function distinctHeaders(request: FastifyRequest): Record<string, string | string[] | undefined> {
  const headers: Record<string, string | string[] | undefined> = { ...request.headers };
  for (const [name, values] of Object.entries(request.raw.headersDistinct)) if (values !== undefined && values.length > 1) headers[name] = values;
  return headers;
}

/** Every string in a parsed JSON value, keys included, is Unicode text (no lone surrogate). */
function wellFormed(value: unknown): boolean {
  if (typeof value === 'string') return value.isWellFormed();
  if (Array.isArray(value)) return value.every(wellFormed);
  if (typeof value === 'object' && value !== null) return Object.entries(value).every(([k, v]) => k.isWellFormed() && wellFormed(v));
  return true;
}

/** A route path (`/messages/last/:n`) as a regular expression over request paths. */
function pathPattern(path: string): RegExp {
  const parts = path.split('/').map((part) => (part.startsWith(':') ? '[^/]+' : part === '*' ? '.*' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  return new RegExp(`^${parts.join('/')}$`);
}

/** RFC 9110: a path that exists under other methods is 405 with `Allow`, not 404. */
function notFound(
  app: FastifyInstance,
  pathHeaders: readonly { pattern: RegExp; headers: Readonly<Record<string, string>> }[],
  req: FastifyRequest,
  reply: FastifyReply,
): FastifyReply {
  const path = req.url.split('?')[0]!;
  const allowed = METHODS.filter((method) => app.findRoute({ method, url: path }) !== null);
  if (allowed.length > 0) {
    for (const { pattern, headers } of pathHeaders) if (pattern.test(path)) reply.headers(headers);
    return reply
      .code(405)
      .header('allow', allowed.join(', '))
      .send({ error: 'syntax', info: `${req.method} is not allowed on ${path}; use ${allowed.join(', ')}` });
  }
  return reply.code(404).send({ error: 'command_not_found', info: `no route ${req.method} ${path}` });
}

/** Fastify's own refusals before routing, in the `{"error","info"}` shape of every other error. */
function frameworkError(reply: FastifyReply, err: Error & { code?: string }): FastifyReply {
  if (err.code === 'FST_ERR_MAX_PARAM_LENGTH')
    return reply.code(414).send({ error: 'request_too_long', info: `a path segment is over ${MAX_PARAM_LENGTH} characters` });
  if (err.code === 'FST_ERR_BAD_URL') return reply.code(400).send({ error: 'syntax', info: 'the path has an invalid %-escape' });
  return reply.code(500).send({ error: 'unhandled', info: 'internal server error' });
}

function sendError(core: ServerCore, reply: FastifyReply, err: Error & { statusCode?: number; code?: string }, req: FastifyRequest): FastifyReply {
  const headers = (req.routeOptions.config as RouteConfig | undefined)?.headers;
  if (headers !== undefined) reply.headers(headers);
  let status: number;
  let body: { error: string; info: string };
  // a route's own store read (a token look-up) that fails is the store being down, as in a command
  if (!(err instanceof CommandError) && core.store.isFailure(err)) err = new CommandError('unavailable');
  if (err instanceof CommandError) {
    status = httpStatus(err.type);
    body = { error: err.type, info: err.info };
  } else if (err.statusCode === 413) {
    status = 413;
    body = { error: 'request_too_long', info: `the body exceeds ${core.options.maxRequest} bytes` };
  } else if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) {
    status = err.statusCode;
    body = { error: 'syntax', info: err.message };
  } else {
    core.log.error({ err, url: req.url }, 'unhandled error in an HTTP route');
    status = 500;
    body = { error: 'unhandled', info: 'internal server error' };
  }
  if (status === 401) {
    // RFC 9110 section 11.6.1, RFC 6750 section 3: say which scheme, and whether a bearer token offered was
    // refused; a request with no bearer credentials (none, or another scheme such as Basic) gets no error code
    const offered = /^[ \t]*bearer[ \t]/i.test(req.headers.authorization ?? '');
    reply.header('www-authenticate', offered ? 'Bearer realm="textserver", error="invalid_token"' : 'Bearer realm="textserver"');
  }
  // RFC 6585 section 4, RFC 9110 section 10.2.3: when to come back. A login throttle clears within its
  // window at the latest; a rate limit or a store outage is worth retrying after a second
  if (status === 429 || status === 503) {
    const seconds = body.error === 'too_many_attempts' ? Math.max(1, Math.ceil(core.options.loginFailWindowMs / 1000)) : 1;
    reply.header('retry-after', String(seconds));
  }
  return reply.code(status).send(body);
}
