/**
 * KFCR compatibility (GATEWAYS.md section 3): KFCR's routes and message
 * JSON over one room (`--kfcr-room`), so an unchanged KFCR client chats with
 * the room's members. KFCR has no accounts: a post is stored as from
 * `~<user>`, a name no account can have.
 */
import { CommandError, defineModule, type HttpReply, type HttpRoute, type ServerApi } from '../src/core/module-api.ts';
import type { RoomsService } from './rooms.ts';
import type { RoomMessage } from './rooms-store.ts';

/** As the reference's flask-cors: every route, error replies included (the gateway adds route headers to those too). */
const CORS = { 'access-control-allow-origin': '*' } as const;
/** Rows in one page at most, whatever the number asked for (`last/-1` included). */
const MAX = 500;
const HEADER_LIST = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$/;

type KfcrMessage = { id: number; user: string; content: string; timestamp: number; sys: boolean };

const text = (status: number, body: string): HttpReply => ({ status, body });
const json = (body: unknown, status = 200): HttpReply => ({ status, body });

async function rooms(server: ServerApi): Promise<{ service: RoomsService; room: string }> {
  const service = server.services.get<RoomsService>('rooms');
  if (service === undefined) throw new CommandError('command_not_found', 'the rooms module is not loaded');
  const room = server.options['kfcr-room'] as string;
  await service.ensure(room);
  return { service, room };
}

/** `user` as it was posted: the `~` that marks a KFCR post stays in textserver's own views only (the client compares names to hide its echo). */
const toKfcr = (m: RoomMessage): KfcrMessage => ({
  id: m.id,
  user: m.user.startsWith('~') ? m.user.slice(1) : m.user,
  content: m.text,
  timestamp: m.time,
  sys: false,
});

/**
 * A path number as the reference's Python `int()` reads it: surrounding
 * whitespace, an optional sign, decimal digits with single underscores
 * between them. Undefined for what `int()` refuses; clamped to the safe
 * integer range (Python's are unbounded, and nothing here is that large).
 */
export function pythonInt(value: string | undefined): number | undefined {
  const m = value === undefined ? null : /^\s*([+-]?)(\d+(?:_\d+)*)\s*$/.exec(value);
  if (m === null) return undefined;
  const n = Math.min(Number(m[2]!.replaceAll('_', '')), Number.MAX_SAFE_INTEGER);
  return m[1] === '-' && n !== 0 ? -n : n;
}

function version(server: ServerApi): { release: string; number: string; branch: string } {
  return { release: 'S', number: server.version, branch: 'main' };
}

const get = (path: string, handler: HttpRoute['handler']): HttpRoute => ({ method: 'GET', path, handler, headers: CORS });

const reads: HttpRoute[] = [
  get('/KFCR_verification', () => text(200, 'KFCR verified!')),
  get('/messages/last/:n', async (req, server) => {
    const n = pythonInt(req.params.n);
    if (n === undefined) return text(400, 'Invalid message number');
    // SQLite's LIMIT -1 is no limit: every message, here as many as a page holds
    const limit = n < 0 ? MAX : Math.min(n, MAX);
    if (limit === 0) return json([]);
    const { service, room } = await rooms(server);
    return json((await service.history(room, 'last', [limit])).messages.reverse().map(toKfcr));
  }),
  get('/messages/since/:ms', async (req, server) => {
    const ms = pythonInt(req.params.ms);
    if (ms === undefined) return text(400, 'Bad timestamp');
    const { service, room } = await rooms(server);
    return json((await service.history(room, 'since', [ms])).messages.map(toKfcr));
  }),
  get('/messages/sinceid/:id', async (req, server) => {
    // The reference client's position is the largest id of its first `last/50`: from a room with no
    // message yet (the reference's database always holds its boot message) that is Math.max() of
    // nothing, and it polls `sinceid/-Infinity` from then on. Read as "every message", so it shows the
    // first one posted and goes on from its id; Python's int() would refuse it (400 for ever).
    const id = req.params.id === '-Infinity' ? -1 : pythonInt(req.params.id);
    if (id === undefined) return text(400, 'invalid ID');
    const { service, room } = await rooms(server);
    return json((await service.history(room, 'after', [id])).messages.map(toKfcr));
  }),
  get('/messages/id/:id', async (req, server) => {
    const id = pythonInt(req.params.id);
    if (id === undefined) return text(400, 'invalid ID');
    const { service, room } = await rooms(server);
    // the newest message with an id up to this one: it, when it exists
    const [m] = id < 1 ? [] : (await service.history(room, 'before', [id + 1, 1])).messages;
    return m === undefined || m.id !== id ? text(404, 'no message with requested ID') : json(toKfcr(m));
  }),
  get('/version', (_r, s) => text(200, `${version(s).release}${version(s).number}-${version(s).branch}`)),
  get('/version/release', (_r, s) => text(200, version(s).release)),
  get('/version/number', (_r, s) => text(200, version(s).number)),
  get('/version/branch', (_r, s) => text(200, version(s).branch)),
];

const post: HttpRoute = {
  method: 'POST',
  path: '/messages/post',
  headers: CORS,
  async handler(req, server) {
    const body = req.body as Record<string, unknown> | null;
    const user = typeof body === 'object' && body !== null ? pythonStr(body.user) : undefined;
    const content = typeof body === 'object' && body !== null ? pythonStr(body.content) : undefined;
    if (user === undefined || content === undefined) return text(400, 'Malformed message JSON');
    const { service, room } = await rooms(server);
    await service.post(room, `~${user}`, content);
    return text(201, 'message successfully sent!');
  },
};

/**
 * A posted value as the reference stores it (Python's `str()` of what its
 * JSON parser gave): a client that posts a number or a boolean gets it back
 * as text, not a 400. Missing keys, objects and arrays are refused.
 */
function pythonStr(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  if (typeof value === 'boolean') return value ? 'True' : 'False';
  if (value === null) return 'None';
  return undefined;
}

/** A CORS preflight for every route, allowing the headers the browser asks for. */
function preflight(path: string, methods: string): HttpRoute {
  return {
    method: 'OPTIONS',
    path,
    headers: CORS,
    handler(req) {
      const asked = req.headers['access-control-request-headers'];
      const allow = typeof asked === 'string' && HEADER_LIST.test(asked.trim()) ? asked.trim() : 'content-type';
      return { status: 204, headers: { 'access-control-allow-methods': methods, 'access-control-allow-headers': allow, 'access-control-max-age': '600' } };
    },
  };
}

const routes: HttpRoute[] = [...reads, post, ...reads.map((r) => preflight(r.path, 'GET, HEAD, OPTIONS')), preflight(post.path, 'POST, OPTIONS')];

export default defineModule({
  description: 'KFCR-compatible HTTP routes over one room',
  options: {
    'kfcr-room': { type: 'string', default: 'kfcr', description: 'the room KFCR clients read and post to' },
  },
  routes,
});
