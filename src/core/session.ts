import { isUtf8 } from 'node:buffer';
import { CommandError } from './errors.ts';
import type { Link } from './link.ts';
import type { CommandContext, Reply, SessionApi, UserRef } from './module-api.ts';
import { EMPTY_FRAME, OK_FRAME, OutFrame } from './out-frame.ts';
import { isFieldsFault, parseFields } from '../text/fields.ts';
import type { ServerCore } from './server-core.ts';
import { currentTurn } from './turns.ts';

const OPEN = 0;
const DRAINING = 1; // shutting down: finish the request in flight, then close
const CLOSED = 2;

/** Frames, or bytes, queued behind a running request before the transport stops reading. */
const QUEUE_PAUSE = 256;
const QUEUE_PAUSE_BYTES = 1024 * 1024;
/**
 * Unsent reply bytes past which requests wait (and reading stops) until the
 * client reads; at most half of `--max-outbound`, so that pipelining alone
 * never reaches the bound (one reply larger than the rest of it does).
 */
const OUTBOUND_PAUSE = 1024 * 1024;

const EMPTY_REPLY: readonly string[] = Object.freeze([]);

/**
 * Requests one connection runs in one turn of the event loop before the rest
 * of what it sent waits for the next turn. One read can hold thousands of
 * small pipelined requests (64 KiB of `nop`s); run at once they held every
 * other client for as long (tens of milliseconds a read, per flooding
 * connection, and no budget applies before login). Other connections' reads
 * and replies get a turn in between.
 */
const TURN_REQUESTS = 1024;

/** Payloads up to this size are decoded in JS when ASCII: cheaper than a call into C++. */
const SHORT_TEXT = 32;

function shortText(bytes: Buffer, start: number, end: number): string {
  let text = '';
  for (let i = start; i < end; i++) {
    const c = bytes[i]!;
    if (c >= 0x80) return bytes.toString('utf8', start, end);
    text += String.fromCharCode(c);
  }
  return text;
}

/** Longest `req` id in characters (PROTOCOL.md section 3), at most 4 UTF-8 bytes each. */
const MAX_REQUEST_ID_BYTES = 64 * 4;

/**
 * `req,<id>` when the payload is a `req` request with a usable id, else
 * nothing: errors answered before a payload is parsed (rate_limited) are
 * wrapped like the request's own reply would be, so a client matching
 * replies by id is not left waiting. Looks at the first bytes only.
 */
function requestTag(bytes: Buffer, start: number, end: number): readonly string[] {
  if (end - start < 6 || bytes.toString('latin1', start, start + 4) !== 'req,') return EMPTY_REPLY;
  const head = parseFields(bytes.toString('utf8', start, Math.min(end, start + 5 + MAX_REQUEST_ID_BYTES)));
  if (isFieldsFault(head) || head.length < 3) return EMPTY_REPLY;
  const id = head[1]!;
  return id !== '' && [...id].length <= 64 ? ['req', id] : EMPTY_REPLY;
}

/**
 * One client connection, whatever its transport: executes its requests one
 * at a time in arrival order (PROTOCOL.md section 3), writes replies in the
 * same order, and receives pushes between them.
 */
export class Session implements SessionApi {
  static #nextId = 1;
  readonly id = Session.#nextId++;
  readonly link: Link;
  readonly ctx: CommandContext;
  user: UserRef | null = null;
  /** performance.now() of the last complete frame or finished request. */
  lastActive: number;
  readonly #core: ServerCore;
  #state = OPEN;
  #busy = false;
  #queue: Buffer[] = [];
  #queuedBytes = 0;
  #pendingLogin: UserRef | null = null;
  /** In a cluster: the user whose channels this login holds until it is attached (or fails). */
  #loginHold: number | null = null;
  /** What the running request's reply waits for (a push it caused, still queued in order behind others). */
  #replyGate: Promise<unknown> | null = null;
  /** Run right after the running request's reply is written. */
  #afterReply: (() => void)[] = [];
  /** The running request's command and start, for metrics. */
  #command = '';
  #started = 0;
  #reading = true;
  /** Requests run in the turn `#turn` (see TURN_REQUESTS), and whether a pump waits for the next turn. */
  #turn = -1;
  #ranThisTurn = 0;
  #pumpScheduled = false;
  readonly #nextTurnPump = () => {
    this.#pumpScheduled = false;
    this.#pump();
  };
  /** performance.now() when reading last restarted after backpressure held it (0: never held). */
  resumedAt = 0;
  /** Waiting for the client to read its replies before running more requests. */
  #blocked = false;
  readonly #unblock = () => {
    this.#blocked = false;
    this.#pump();
  };

  constructor(core: ServerCore, link: Link) {
    this.#core = core;
    this.link = link;
    this.ctx = { session: this, server: core.api };
    this.lastActive = performance.now();
  }

  /** The server's traffic counters, for transports to add to. */
  get counters(): ServerCore['counters'] {
    return this.#core.counters;
  }

  get transport(): string {
    return this.link.transport;
  }

  get remoteAddress(): string {
    return this.link.remoteAddress;
  }

  get busy(): boolean {
    return this.#busy;
  }

  get open(): boolean {
    return this.#state === OPEN;
  }

  requireUser(): UserRef {
    if (this.user === null) throw new CommandError('not_logged_in');
    return this.user;
  }

  loginAs(user: UserRef): void {
    this.#pendingLogin = user;
    // in a cluster the user's channels are subscribed before the reply (CLUSTER.md rule 5)
    const ready = this.#core.hub.prepareLogin(user.id);
    if (ready === undefined) return;
    this.#releaseLoginHold();
    this.#loginHold = user.id;
    // and a version 1 login's inbox head is read once that subscription is active, before the reply
    this.delayReply(ready.then(() => this.#core.hub.inbox.prepareLogin(this, user.id)));
  }

  #releaseLoginHold(): void {
    if (this.#loginHold === null) return;
    const id = this.#loginHold;
    this.#loginHold = null;
    this.#core.hub.releaseLogin(id);
  }

  /**
   * The running request's reply is written only once `until` settles: a
   * push the request caused must come first, and it is still queued behind
   * others (an inbox entry behind a replay).
   */
  delayReply(until: Promise<unknown>): void {
    this.#replyGate = this.#replyGate === null ? until : Promise.all([this.#replyGate, until]);
  }

  /** Runs `fn` right after the running request's reply is written (not when it fails, nor when the connection is gone). */
  afterReply(fn: () => void): void {
    this.#afterReply.push(fn);
  }

  push(fields: readonly string[]): boolean {
    return this.pushFrame(OutFrame.of(fields));
  }

  /** Delivers a push unless the connection is past its outbound bound (then it is cut). */
  pushFrame(frame: OutFrame, written?: (err?: Error | null) => void): boolean {
    if (this.#state === CLOSED) return false;
    return this.#write(frame, written);
  }

  /**
   * Writes a reply or push within `--max-outbound`: a frame that would take
   * the unsent bytes past it cuts the connection as `slow_consumer` instead
   * (replies count like pushes: a client that asks for big replies and does
   * not read them is not buffered without bound).
   */
  #write(frame: OutFrame, written?: (err?: Error | null) => void): boolean {
    const pending = this.link.pendingBytes();
    if (pending + frame.size > this.#core.options.maxOutbound) {
      this.#core.counters.slowConsumers++;
      this.fatal(new CommandError('slow_consumer', String(pending)));
      return false; // the caller sees the frame was not written; `written` is never called for it
    }
    this.link.write(frame, written);
    return true;
  }

  /**
   * A decoded payload from the transport, `bytes[start..end)` (the transport
   * also keeps `lastActive` up to date, once per read).
   */
  receive(bytes: Buffer, start = 0, end = bytes.length): void {
    if (this.#state !== OPEN) return;
    if (this.#busy || this.#blocked || this.#queue.length > 0 || !this.#mayRun()) {
      this.#queue.push(start === 0 && end === bytes.length ? bytes : bytes.subarray(start, end));
      this.#queuedBytes += end - start;
      if (this.#queue.length >= QUEUE_PAUSE || this.#queuedBytes >= QUEUE_PAUSE_BYTES) this.#setReading(false);
      if (!this.#busy && !this.#blocked) this.#pumpNextTurn();
      return;
    }
    this.#execute(bytes, start, end);
    this.#checkOutbound();
  }

  /** Sends a fatal error tuple and closes. */
  fatal(err: CommandError): void {
    if (this.#state === CLOSED) return;
    this.link.write(OutFrame.of(err.fields()));
    this.close(err.type === 'shutdown' ? 'shutdown' : 'fatal');
  }

  /** Stops after the request in flight (graceful shutdown). */
  drain(): void {
    if (this.#state !== OPEN) return;
    this.#state = DRAINING;
    this.#queue = [];
    this.#queuedBytes = 0;
    if (!this.#busy) this.fatal(new CommandError('shutdown'));
  }

  /** Idempotent: detaches from the hub and closes the link. */
  close(reason: 'fatal' | 'shutdown' | 'normal' = 'normal'): void {
    if (this.#state === CLOSED) return;
    this.#state = CLOSED;
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#core.detach(this);
    this.link.close(reason);
  }

  #execute(bytes: Buffer, start: number, end: number): void {
    let result: Reply | Promise<Reply>;
    this.#core.counters.framesIn++;
    if (this.#core.observer !== undefined) this.#started = performance.now();
    try {
      result = this.#dispatch(bytes, start, end);
    } catch (err) {
      this.#fail(err);
      return;
    }
    if (result instanceof Promise || this.#replyGate !== null) {
      this.#busy = true;
      Promise.resolve(result).then(
        (reply) => this.#gated(reply, undefined),
        (err: unknown) => this.#gated(undefined, err ?? new Error('rejected')),
      );
    } else {
      this.#reply(result);
    }
  }

  #dispatch(bytes: Buffer, start: number, end: number): Reply | Promise<Reply> {
    if (end === start) return EMPTY_REPLY; // keepalive, answered like nop
    if (this.user !== null) this.#charge(bytes, start, end);
    const text = end - start <= SHORT_TEXT ? shortText(bytes, start, end) : bytes.toString('utf8', start, end);
    // Invalid UTF-8 decodes to U+FFFD; only then is the (rarer) full check worth its cost.
    if (text.indexOf('\uFFFD') !== -1 && !isUtf8(bytes.subarray(start, end))) {
      throw new CommandError('syntax', 'the payload is not valid UTF-8');
    }
    const fields = parseFields(text);
    if (isFieldsFault(fields)) throw new CommandError('syntax', fields.info);
    this.#command = fields[0]!;
    return this.#core.invoke(this.ctx, fields);
  }

  /** The user's request and byte budget, charged before the payload is even decoded (a refusal costs next to nothing). */
  #charge(bytes: Buffer, start: number, end: number): void {
    try {
      this.#core.users.budget.charge(this.user!.id, end - start);
    } catch (err) {
      (err as CommandError).prefix = requestTag(bytes, start, end);
      throw err;
    }
  }

  /** A reply whose request set a gate waits for it; an error does not (what it waited for may never come). */
  #gated(reply: Reply, err: unknown): void {
    const gate = this.#replyGate;
    if (gate === null || err !== undefined) {
      this.#replyGate = null;
      this.#settled(reply, err);
      return;
    }
    this.#replyGate = null;
    const go = () => this.#settled(reply, err);
    gate.then(go, go);
  }

  #settled(reply: Reply, err: unknown): void {
    this.#busy = false;
    this.lastActive = performance.now();
    if (err !== undefined) this.#fail(err);
    else this.#reply(reply);
    if (this.#state === DRAINING) {
      this.fatal(new CommandError('shutdown'));
      return;
    }
    this.#checkOutbound();
    this.#pump();
  }

  /** Runs queued requests until one goes asynchronous or the client stops reading. */
  #pump(): void {
    while (this.#state === OPEN && !this.#busy && !this.#blocked && this.#queue.length > 0) {
      if (!this.#mayRun()) {
        this.#pumpNextTurn();
        break;
      }
      const next = this.#queue.shift()!;
      this.#queuedBytes -= next.length;
      this.#execute(next, 0, next.length);
      this.#checkOutbound();
    }
    this.#setReading(!this.#blocked && this.#queue.length < QUEUE_PAUSE / 2 && this.#queuedBytes < QUEUE_PAUSE_BYTES / 2);
  }

  /** Counts a request against this turn's share; false once the share is used up. */
  #mayRun(): boolean {
    const now = currentTurn();
    if (this.#turn !== now) {
      this.#turn = now;
      this.#ranThisTurn = 0;
    }
    return this.#ranThisTurn++ < TURN_REQUESTS;
  }

  #pumpNextTurn(): void {
    if (this.#pumpScheduled) return;
    this.#pumpScheduled = true;
    setImmediate(this.#nextTurnPump);
  }

  /** Order and backpressure in one move: no more requests while replies pile up unread. */
  #checkOutbound(): void {
    if (this.#blocked || this.link.pendingBytes() <= Math.min(OUTBOUND_PAUSE, this.#core.options.maxOutbound / 2) || this.#state !== OPEN) return;
    this.#blocked = true;
    this.#setReading(false);
    this.link.onDrain(this.#unblock);
  }

  #setReading(on: boolean): void {
    if (this.#reading === on || this.#state === CLOSED) return;
    this.#reading = on;
    this.link.setReading(on);
    if (on) {
      // while reading was held, the client's frames waited on our side: no timeout clock ran against it
      this.resumedAt = performance.now();
      this.lastActive = this.resumedAt;
    }
  }

  /** False while backpressure holds the peer's requests back (replies unread, or a full queue). */
  get reading(): boolean {
    return this.#reading;
  }

  #observe(outcome: string): void {
    const observer = this.#core.observer;
    if (observer !== undefined) observer(this.#core.commandLabel(this.#command), outcome, (performance.now() - this.#started) / 1000);
    this.#command = '';
  }

  #reply(reply: Reply): void {
    this.#observe('ok');
    if (this.#state === CLOSED) {
      this.#afterReply.length = 0;
      this.#pendingLogin = null;
      this.#releaseLoginHold();
      return;
    }
    if (!this.#write(reply === undefined ? OK_FRAME : reply.length === 0 ? EMPTY_FRAME : OutFrame.of(reply))) {
      this.#pendingLogin = null;
      this.#afterReply.length = 0;
      this.#releaseLoginHold();
      return;
    }
    if (this.#pendingLogin !== null) {
      const user = this.#pendingLogin;
      this.#pendingLogin = null;
      this.#core.hub.attach(this, user);
    }
    this.#releaseLoginHold();
    if (this.#afterReply.length > 0) for (const fn of this.#afterReply.splice(0)) fn();
  }

  #fail(err: unknown): void {
    this.#pendingLogin = null;
    this.#releaseLoginHold();
    this.#replyGate = null;
    this.#afterReply.length = 0;
    const error = this.#core.toCommandError(err, this);
    this.#observe(error.type);
    if (error.fatal) this.fatal(error);
    else if (this.#state !== CLOSED) this.#write(OutFrame.of(error.fields()));
  }
}
