/**
 * HTTP requests of one connection run at most TURN_HTTP_REQUESTS per turn
 * of the event loop; the rest wait, in order, with the socket not read, and
 * run in later turns. One 64 KiB read of pipelined `GET /healthz` holds
 * 1,800 requests, and node parses and hands them over all at once (and
 * reads on): at about 40 µs a request through the routes, five anonymous
 * clients pipelining as fast as they could held every other client for
 * seconds. The TCP transport has the same kind of share (1024 of its far
 * cheaper requests); this is HTTP's.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { currentTurn } from '../core/turns.ts';

export const TURN_HTTP_REQUESTS = 64;

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
type Waiting = { turn: number; ran: number; queue: [IncomingMessage, ServerResponse][]; scheduled: boolean; release: (() => void) | undefined };

/**
 * Node pauses a socket itself while the replies to it are not read (its
 * `_paused`): that pause is left to node to lift.
 */
const pausedByNode = (socket: Socket) => (socket as Socket & { _paused?: boolean })._paused === true;

/**
 * Keeps a socket from being read until the returned release is called.
 * Node's HTTP parser resumes the socket after every request it parsed
 * (unless it paused it itself), so a plain pause() would not hold: resume()
 * does nothing on this socket meanwhile.
 */
function hold(socket: Socket): () => void {
  const resume = socket.resume;
  socket.resume = function held() {
    return this;
  };
  socket.pause();
  return () => {
    socket.resume = resume;
    if (!pausedByNode(socket) && !socket.destroyed) socket.resume();
  };
}

export type FairRequests = {
  readonly handler: Handler;
  /** Lets the socket be read again whatever waits (it is being upgraded to a WebSocket). */
  release(socket: Socket): void;
};

export function fairRequests(handler: Handler, perTurn = TURN_HTTP_REQUESTS): FairRequests {
  const connections = new WeakMap<Socket, Waiting>();
  const mayRun = (w: Waiting): boolean => {
    const now = currentTurn();
    if (w.turn !== now) {
      w.turn = now;
      w.ran = 0;
    }
    return w.ran++ < perTurn;
  };
  const schedule = (socket: Socket, w: Waiting) => {
    if (w.scheduled) return;
    w.scheduled = true;
    setImmediate(() => pump(socket, w));
  };
  const pump = (socket: Socket, w: Waiting) => {
    w.scheduled = false;
    while (w.queue.length > 0) {
      if (socket.destroyed) {
        w.queue = []; // node closed their responses with the socket
        break;
      }
      if (!mayRun(w)) return schedule(socket, w);
      const [req, res] = w.queue.shift()!;
      handler(req, res);
    }
    const release = w.release;
    w.release = undefined;
    release?.();
  };
  return {
    handler(req, res) {
      const socket = req.socket;
      let w = connections.get(socket);
      if (w === undefined) connections.set(socket, (w = { turn: -1, ran: 0, queue: [], scheduled: false, release: undefined }));
      if (w.queue.length === 0 && mayRun(w)) return handler(req, res);
      w.queue.push([req, res]);
      // what was read already is parsed at once; nothing more is read until the queue is worked off
      w.release ??= hold(socket);
      schedule(socket, w);
    },
    release(socket) {
      const w = connections.get(socket);
      const release = w?.release;
      if (w === undefined || release === undefined) return;
      w.release = undefined;
      release();
    },
  };
}
