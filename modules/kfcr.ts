/**
 * KFCR compatibility (GATEWAYS.md section 3): KFCR's routes and message
 * JSON over one room (`--kfcr-room`), so an unchanged KFCR client chats with
 * the room's members. KFCR has no accounts: a post is stored as from
 * `~<user>`, a name no account can have.
 */
import { CommandError, defineModule, type HttpReply, type HttpRoute, type ServerApi } from '../src/core/module-api.ts';
import type { RoomsService } from './rooms.ts';
import type { RoomMessage } from './rooms-store.ts';

const CORS = { 'access-control-allow-origin': '*' } as const;
const MAX = 500;

type KfcrMessage = { id: number; user: string; content: string; timestamp: number; sys: boolean };

const text = (status: number, body: string): HttpReply => ({ status, body, headers: CORS });
const json = (body: unknown, status = 200): HttpReply => ({ status, body, headers: CORS });

async function rooms(server: ServerApi): Promise<{ service: RoomsService; room: string }> {
  const service = server.services.get<RoomsService>('rooms');
  if (service === undefined) throw new CommandError('command_not_found', 'the rooms module is not loaded');
  const room = server.options['kfcr-room'] as string;
  await service.ensure(room);
  return { service, room };
}

const toKfcr = (m: RoomMessage): KfcrMessage => ({ id: m.id, user: m.user, content: m.text, timestamp: m.time, sys: false });

/** A whole non-negative number from a path, or undefined. */
function whole(value: string | undefined): number | undefined {
  return value !== undefined && /^\d{1,15}$/.test(value) ? Number(value) : undefined;
}

function version(server: ServerApi): { release: string; number: string; branch: string } {
  return { release: 'S', number: server.version, branch: 'main' };
}

const routes: HttpRoute[] = [
  { method: 'GET', path: '/KFCR_verification', handler: () => text(200, 'KFCR verified!') },
  {
    method: 'GET',
    path: '/messages/last/:n',
    async handler(req, server) {
      const n = whole(req.params.n);
      if (n === undefined || n < 1) return text(400, 'Invalid message number');
      const { service, room } = await rooms(server);
      return json((await service.history(room, 'last', [Math.min(n, MAX)])).messages.reverse().map(toKfcr));
    },
  },
  {
    method: 'GET',
    path: '/messages/since/:ms',
    async handler(req, server) {
      const ms = whole(req.params.ms);
      if (ms === undefined) return text(400, 'Bad timestamp');
      const { service, room } = await rooms(server);
      return json((await service.history(room, 'since', [ms])).messages.map(toKfcr));
    },
  },
  {
    method: 'GET',
    path: '/messages/sinceid/:id',
    async handler(req, server) {
      const id = whole(req.params.id);
      if (id === undefined) return text(400, 'invalid ID');
      const { service, room } = await rooms(server);
      return json((await service.history(room, 'after', [id])).messages.map(toKfcr));
    },
  },
  {
    method: 'GET',
    path: '/messages/id/:id',
    async handler(req, server) {
      const id = whole(req.params.id);
      if (id === undefined) return text(400, 'invalid ID');
      const { service, room } = await rooms(server);
      const [m] = id < 1 ? [] : (await service.history(room, 'after', [id - 1])).messages.slice(0, 1);
      return m === undefined || m.id !== id ? text(404, 'no message with requested ID') : json(toKfcr(m));
    },
  },
  {
    method: 'POST',
    path: '/messages/post',
    async handler(req, server) {
      const body = req.body as Record<string, unknown> | null;
      if (typeof body !== 'object' || body === null || typeof body.user !== 'string' || typeof body.content !== 'string') {
        return text(400, 'Malformed message JSON');
      }
      const { service, room } = await rooms(server);
      await service.post(room, `~${body.user}`, body.content);
      return text(201, 'message successfully sent!');
    },
  },
  {
    method: 'OPTIONS',
    path: '/messages/post',
    handler: () => ({ status: 204, headers: { ...CORS, 'access-control-allow-methods': 'GET, POST, OPTIONS', 'access-control-allow-headers': 'content-type' } }),
  },
  { method: 'GET', path: '/version', handler: (_r, s) => text(200, `${version(s).release}${version(s).number}-${version(s).branch}`) },
  { method: 'GET', path: '/version/release', handler: (_r, s) => text(200, version(s).release) },
  { method: 'GET', path: '/version/number', handler: (_r, s) => text(200, version(s).number) },
  { method: 'GET', path: '/version/branch', handler: (_r, s) => text(200, version(s).branch) },
];

export default defineModule({
  description: 'KFCR-compatible HTTP routes over one room',
  options: {
    'kfcr-room': { type: 'string', default: 'kfcr', description: 'the room KFCR clients read and post to' },
  },
  routes,
});
