/**
 * The browser client (GATEWAYS.md section 5): web/index.html, web/app.css
 * and the built modules under web/dist, served as /js/...
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { FastifyInstance, FastifyReply } from 'fastify';

const WEB_DIR = resolve(import.meta.dirname, '../../web');
const WEB_BUILD = join(WEB_DIR, 'dist');
/** The module web/index.html loads first: without it the client is not built. */
const WEB_ENTRY = join(WEB_BUILD, 'web', 'src', 'app.js');
const WEB_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

export function mountWebClient(app: FastifyInstance): void {
  const send = (reply: FastifyReply, path: string) => {
    if (!existsSync(path)) {
      // "not built" only when the client's entry module is missing too; otherwise the file just does not exist
      const info = existsSync(WEB_ENTRY) ? 'no such file' : 'the browser client is not built (npm run build:web)';
      return reply.code(404).send({ error: 'command_not_found', info });
    }
    const ext = path.slice(path.lastIndexOf('.'));
    return reply
      .type(WEB_TYPES[ext] ?? 'application/octet-stream')
      .header('cache-control', 'no-cache')
      .send(readFileSync(path));
  };
  app.get('/', (_req, reply) => send(reply, join(WEB_DIR, 'index.html')));
  app.get('/app.css', (_req, reply) => send(reply, join(WEB_DIR, 'app.css')));
  app.get('/js/*', (req, reply) => {
    const path = resolve(WEB_BUILD, (req.params as { '*': string })['*']);
    if (!path.startsWith(`${WEB_BUILD}/`) || !path.endsWith('.js')) return reply.code(404).send({ error: 'command_not_found', info: 'no such file' });
    return send(reply, path);
  });
}
