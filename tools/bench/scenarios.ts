/** What each benchmark scenario runs against each system, with the same load generator. */
import type net from 'node:net';
import { connect } from '../../src/client/client.ts';
import { encodeFrame } from '../../src/wire/frame-encoder.ts';
import { formatFields } from '../../src/text/fields.ts';
import { closedLoop, exchange, openSocket, receiver, stamp, STAMP_WIDTH, type Window } from './load.ts';
import { startMinServer, startRedis, startTextserver, type System } from './systems.ts';

export type Params = { connections: number; pipeline: number; fanout: number; pairs: number };

export type Contender = {
  readonly label: string;
  readonly baseline: boolean;
  start(params: Params): Promise<System>;
  /** Opens the connections and starts the load; the returned function stops it. */
  load(system: System, window: Window, params: Params): Promise<() => void>;
};

export type Scenario = {
  readonly name: string;
  readonly unit: string;
  readonly describe: (p: Params) => string;
  readonly contenders: (redis: boolean) => Contender[];
  /** The ratio to the baseline the other contenders should reach, printed beside theirs. */
  readonly targetRatio?: number;
};

const PW = 'password1';
const frame = (...fields: string[]) => encodeFrame(formatFields(fields));
const OK_SIZE = 7; // "ok" framed
const EMPTY_SIZE = 5;

function closeAll(sockets: net.Socket[], stops: (() => void)[]): () => void {
  return () => {
    for (const s of stops) s();
    for (const s of sockets) s.destroy();
  };
}

async function registerAll(port: number, names: string[]): Promise<void> {
  const c = await connect({ port });
  await Promise.all(names.map((n) => c.call('register', n, PW).catch(() => undefined)));
  await c.close();
}

async function loggedIn(port: number, name: string): Promise<net.Socket> {
  const s = await openSocket(port);
  const reply = await exchange(s, frame('login', name, PW), OK_SIZE);
  if (reply.toString('latin1', 5) !== 'ok') throw new Error(`login ${name} failed`);
  return s;
}

/**
 * A receiver's login: the messages stored for it by the previous run (sends
 * still in flight when that run's sockets closed) drain after the `ok`;
 * they are read and dropped until the connection has been quiet for a
 * moment, so the run counts only its own deliveries.
 */
async function loggedInDrained(port: number, name: string): Promise<net.Socket> {
  const s = await openSocket(port);
  await new Promise<void>((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    let ok = false;
    let quiet: NodeJS.Timeout | undefined;
    const done = () => {
      s.off('data', onData);
      resolve();
    };
    const onData = (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(0)) {
        const size = buf.readUInt32BE(0);
        if (!ok && buf.toString('latin1', 5, 5 + size) !== 'ok') return reject(new Error(`login ${name} failed`));
        ok = true;
        buf = buf.subarray(5 + size);
      }
      if (ok) {
        clearTimeout(quiet);
        quiet = setTimeout(done, 150);
      }
    };
    s.on('data', onData);
    s.write(frame('login', name, PW));
  });
  return s;
}

const pad = (i: number) => String(i).padStart(4, '0');

function textserver(prepare?: (port: number, params: Params) => Promise<void>, args: string[] = []): Contender['start'] {
  return async (params) => {
    const system = await startTextserver({ fastHash: true, args });
    await prepare?.(system.port, params);
    return system;
  };
}

/** nop round trips: C connections, P outstanding each. */
function roundTrips(label: string, start: Contender['start'], request: Buffer, replySize: number, baseline: boolean): Contender {
  return {
    label,
    baseline,
    start,
    async load(system, window, { connections, pipeline }) {
      const sockets = await Promise.all(Array.from({ length: connections }, () => openSocket(system.port)));
      return closeAll(
        sockets,
        sockets.map((s) => closedLoop(s, request, replySize, pipeline, window)),
      );
    },
  };
}

const nop: Scenario = {
  name: 'nop',
  unit: 'req/s',
  describe: (p) => `nop round trips, C=${p.connections}, P=${p.pipeline}`,
  contenders: (redis) => [
    roundTrips('min-server', () => startMinServer(false), frame('nop'), EMPTY_SIZE, true),
    roundTrips('textserver', textserver(), frame('nop'), EMPTY_SIZE, false),
    ...(redis ? [roundTrips('redis PING', startRedis, Buffer.from('PING\r\n'), 7, false)] : []),
  ],
};

const whoami: Scenario = {
  name: 'whoami',
  unit: 'req/s',
  describe: (p) => `whoami (logged in, through the router), C=${p.connections}, P=${p.pipeline}`,
  contenders: () => [
    roundTrips('min-server', () => startMinServer(false), frame('whoami'), EMPTY_SIZE, true),
    {
      label: 'textserver',
      baseline: false,
      start: textserver((port) => registerAll(port, ['whoami_user'])),
      async load(system, window, { connections, pipeline }) {
        const sockets = await Promise.all(Array.from({ length: connections }, () => loggedIn(system.port, 'whoami_user')));
        const size = frame('user', 'whoami_user').length;
        return closeAll(
          sockets,
          sockets.map((s) => closedLoop(s, frame('whoami'), size, pipeline, window)),
        );
      },
    },
  ],
};

/**
 * Publishers in a closed loop; receivers count pushes and their latency from
 * the stamp inside. Receivers connect to the system's receiverPort when it
 * has one (a cluster's other node).
 */
export function relayContender(
  label: string,
  start: Contender['start'],
  wire: RelayWire,
  baseline: boolean,
  fan: (p: Params) => { groups: number; perGroup: number; publisherPipeline: number },
): Contender {
  return {
    label,
    baseline,
    start,
    async load(system, window, params) {
      const { groups, perGroup, publisherPipeline } = fan(params);
      const sockets: net.Socket[] = [];
      const stops: (() => void)[] = [];
      for (let g = 0; g < groups; g++) {
        for (let k = 0; k < perGroup; k++) {
          const r = await wire.subscribe(system.receiverPort ?? system.port, g);
          sockets.push(r);
          receiver(r, wire.pushSize(g), wire.stampFromEnd, window);
        }
      }
      const ignored = { measuring: false, count: 0, latency: window.latency };
      for (let g = 0; g < groups; g++) {
        const p = await wire.publisher(system.port, g);
        sockets.push(p);
        stops.push(closedLoop(p, () => wire.publish(g), wire.ackSize(params, perGroup), publisherPipeline, ignored));
      }
      return closeAll(sockets, stops);
    },
  };
}

export type RelayWire = {
  subscribe(port: number, group: number): Promise<net.Socket>;
  publisher(port: number, group: number): Promise<net.Socket>;
  publish(group: number): Buffer;
  pushSize(group: number): number;
  stampFromEnd: number;
  ackSize(params: Params, perGroup: number): number;
};

export const tsWire: RelayWire = {
  subscribe: (port, g) => loggedInDrained(port, `r${pad(g)}`),
  publisher: (port, g) => loggedIn(port, `s${pad(g)}`),
  publish: (g) => frame('send', `r${pad(g)}`, 'm', stamp()),
  pushSize: (g) => frame('send', `s${pad(g)}`, 'm', '0'.repeat(STAMP_WIDTH)).length,
  stampFromEnd: 0,
  ackSize: () => OK_SIZE,
};

const minWire: RelayWire = {
  async subscribe(port, g) {
    const s = await openSocket(port);
    await exchange(s, frame('sub', `c${pad(g)}`), EMPTY_SIZE);
    return s;
  },
  publisher: (port) => openSocket(port),
  publish: (g) => frame('pub', `c${pad(g)}`, stamp()),
  pushSize: (g) => frame('pub', `c${pad(g)}`, '0'.repeat(STAMP_WIDTH)).length,
  stampFromEnd: 0,
  ackSize: () => EMPTY_SIZE,
};

const redisWire: RelayWire = {
  async subscribe(port, g) {
    const s = await openSocket(port);
    const ch = `c${pad(g)}`;
    await exchange(s, Buffer.from(`SUBSCRIBE ${ch}\r\n`), `*3\r\n$9\r\nsubscribe\r\n$${ch.length}\r\n${ch}\r\n:1\r\n`.length);
    return s;
  },
  publisher: (port) => openSocket(port),
  publish: (g) => Buffer.from(`PUBLISH c${pad(g)} ${stamp()}\r\n`),
  pushSize: (g) => `*3\r\n$7\r\nmessage\r\n$5\r\nc${pad(g)}\r\n$${STAMP_WIDTH}\r\n${'0'.repeat(STAMP_WIDTH)}\r\n`.length,
  stampFromEnd: 2,
  ackSize: (_p, perGroup) => `:${perGroup}\r\n`.length,
};

/** The users of `send` and `fanout`: a sender s<g> and a receiver r<g> per group. */
export function pairsPrepare(port: number, params: Params): Promise<void> {
  const groups = Math.max(1, params.pairs);
  return registerAll(port, Array.from({ length: groups }, (_, g) => [`s${pad(g)}`, `r${pad(g)}`]).flat());
}

/** `send`: a receiver per sender. */
export const pairsFan = (p: Params) => ({ groups: p.pairs, perGroup: 1, publisherPipeline: p.pipeline });
/** `fanout`: one sender, one receiving user with K connections. */
export const fanoutFan = (p: Params) => ({ groups: 1, perGroup: p.fanout, publisherPipeline: p.pipeline });

const send: Scenario = {
  name: 'send',
  unit: 'deliveries/s',
  describe: (p) => `send 1:1, ${p.pairs} pairs, P=${p.pipeline} per sender; latency send -> push`,
  contenders: (redis) => {
    const fan = pairsFan;
    return [
      relayContender('min-relay', () => startMinServer(true), minWire, true, fan),
      relayContender('textserver', textserver(pairsPrepare), tsWire, false, fan),
      ...(redis ? [relayContender('redis PUBLISH', startRedis, redisWire, false, fan)] : []),
    ];
  },
};

const fanout: Scenario = {
  name: 'fanout',
  unit: 'deliveries/s',
  describe: (p) => `one send reaching K=${p.fanout} connections of a user, P=${p.pipeline}`,
  contenders: (redis) => {
    const fan = fanoutFan;
    return [
      relayContender('min-relay', () => startMinServer(true), minWire, true, fan),
      relayContender('textserver', textserver(pairsPrepare), tsWire, false, fan),
      ...(redis ? [relayContender('redis PUBLISH', startRedis, redisWire, false, fan)] : []),
    ];
  },
};

/** A WebSocket client socket after a raw handshake: the generator stays as cheap as on TCP. */
async function wsSocket(port: number): Promise<net.Socket> {
  const s = await openSocket(port);
  const request = Buffer.from(
    `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  await new Promise<void>((resolve) => {
    let head = '';
    const onData = (chunk: Buffer) => {
      head += chunk.toString('latin1');
      if (head.includes('\r\n\r\n')) {
        s.off('data', onData);
        resolve();
      }
    };
    s.on('data', onData);
    s.write(request);
  });
  return s;
}

/** A masked client text frame (RFC 6455) with a fixed mask: the bytes are the same every time. */
function wsFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = Buffer.from([1, 2, 3, 4]);
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]);
}

const ws: Scenario = {
  name: 'ws',
  unit: 'req/s',
  describe: (p) => `nop round trips over WebSocket vs TCP, C=${p.connections}, P=${p.pipeline}`,
  contenders: () => {
    const start = textserver(undefined, ['--ws-port', '0']);
    return [
      roundTrips('textserver tcp', start, frame('nop'), EMPTY_SIZE, true),
      {
        label: 'textserver ws',
        baseline: false,
        start,
        async load(system, window, { connections, pipeline }) {
          const sockets = await Promise.all(Array.from({ length: connections }, () => wsSocket(system.wsPort!)));
          return closeAll(
            sockets,
            sockets.map((s) => closedLoop(s, wsFrame('nop'), 2, pipeline, window)),
          );
        },
      },
    ];
  },
};

export const SCENARIOS: Record<string, Scenario> = { nop, whoami, send, fanout, ws };
