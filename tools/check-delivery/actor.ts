/**
 * One inbox client of the delivery checker: logs in, follows its inbox,
 * and sends to the others one `once`-keyed send at a time, recording each
 * outcome. Its connection is dropped at random moments (the client library
 * reconnects, resumes and sends again under the same key), and now and then
 * the "app" crashes: the client is thrown away and a new one resumes from
 * the position kept, and retries the send in flight with its stored key or
 * gives it up (its outcome stays unknown).
 */
import { connect, ConnectionClosedError, newOnceKey, ReplyError, type InboxPosition, type TextClient } from '../../src/client/client.ts';
import type { Random } from './random.ts';
import type { Attempt, LiveEntry } from './verify.ts';

export const PASSWORD = 'check-delivery-pw';

export type Counters = {
  drops: number;
  crashes: number;
  reconnects: number;
  /** Sends in flight when their connection went away (the reply may be lost): sent again under the same key. */
  lostReplies: number;
  /** Sends in flight at a crash that the new client gave up. */
  abandoned: number;
  /** Logins or resumes refused after a reconnect (each makes the actor start a new client). */
  refusedAfterReconnect: number;
};

export type ActorSetup = {
  /** The port to connect to, asked anew for every connection and reconnect: any node of a cluster, at random. */
  port: () => number;
  me: string;
  users: readonly string[];
  command: string;
  random: Random;
  /** Mean time between two interruptions of this client (a drop, or a crash). */
  dropMeanMs: number;
  /** Share of interruptions that are crashes of the app rather than network drops. */
  crashShare: number;
  attempts: Attempt[];
  counters: Counters;
  /** false: plain `send`, sent again after a lost reply as a naive client would (the checker should then find duplicates). */
  useOnce: boolean;
};

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class Actor {
  readonly live: LiveEntry[] = [];
  /** Each stream_reset: the position resumed from and the server's info. */
  readonly resets: string[] = [];
  readonly #s: ActorSetup;
  #client: TextClient | undefined;
  /** Resolves to a logged-in client following the inbox (a new one after a crash). */
  #ready: Promise<TextClient> | undefined;
  #position: InboxPosition = { epoch: '', seq: 0 };
  #counter = 0;
  #acks = 0;
  #inFlight = false;
  #crashed = false;
  #stopped = false;
  /** Resolved when the current client is thrown away (a crash, or the end of the run). */
  #thrownAway = Promise.withResolvers<void>();

  constructor(setup: ActorSetup) {
    this.#s = setup;
  }

  /** Sends until `until`, while interruptions come at random; resolves when the last send is settled (or `giveUpAt` passes). */
  async run(until: number, giveUpAt: number): Promise<void> {
    this.#reopen();
    const chaos = this.#interrupt(until);
    while (Date.now() < until) {
      await this.#sendOne(giveUpAt);
      if (this.#s.random.next() < 0.1) await sleep(this.#s.random.int(10));
    }
    await chaos;
  }

  /** Throws the client away (the run is over, or the send in flight is given up). */
  stop(): void {
    this.#stopped = true;
    this.#client?.destroy();
    this.#thrownAway.resolve();
  }

  async #sendOne(giveUpAt: number): Promise<void> {
    const { me, users, command, random } = this.#s;
    const to = users[random.int(users.length)]!;
    const attempt: Attempt = { from: me, n: this.#counter++, to, key: newOnceKey(), outcome: 'unknown' };
    this.#s.attempts.push(attempt);
    for (;;) {
      const client = await this.#readyClient(giveUpAt);
      if (client === undefined) return; // never got through: unknown
      this.#inFlight = true;
      this.#crashed = false;
      try {
        const fields = ['send', to, command, `${me}:${attempt.n}`];
        await (this.#s.useOnce ? client.requestWithKey(attempt.key, ...fields) : this.#withoutOnce(client, fields));
        attempt.outcome = 'ok';
        attempt.ackOrder = this.#acks++;
        return;
      } catch (err) {
        if (err instanceof ReplyError) {
          attempt.outcome = 'error';
          attempt.error = err.type;
          return;
        }
        if (!(err instanceof ConnectionClosedError) || this.#stopped || Date.now() >= giveUpAt) return;
        // the app crashed with the send in flight: the new one retries it with the stored key, or forgets it
        if (this.#crashed && random.next() < 0.5) {
          this.#s.counters.abandoned++;
          return;
        }
      } finally {
        this.#inFlight = false;
      }
    }
  }

  /** A send with no key: after a lost reply, sent again as it is once the client is back. */
  async #withoutOnce(client: TextClient, fields: string[]): Promise<string[]> {
    for (;;) {
      let onBack = () => {};
      const back = new Promise<void>((r) => client.once('reconnected', (onBack = () => r())));
      try {
        return await client.request(...fields);
      } catch (err) {
        if (!(err instanceof ConnectionClosedError) || this.#crashed || this.#stopped) throw err;
        // a crash or the end of the run while it reconnects ends its reconnect loop without a `reconnected`
        await Promise.race([back, this.#thrownAway.promise]);
        if (this.#crashed || this.#stopped) throw err;
      } finally {
        client.off('reconnected', onBack);
      }
    }
  }

  async #readyClient(giveUpAt: number): Promise<TextClient | undefined> {
    for (;;) {
      try {
        return await this.#ready!;
      } catch {
        if (this.#stopped || Date.now() >= giveUpAt) return undefined;
        await sleep(100);
        this.#reopen();
      }
    }
  }

  #reopen(): void {
    const ready = this.#open();
    ready.catch(() => {}); // awaited by the next send, if there is one
    this.#ready = ready;
  }

  /** A new client: connect (the server may be down: try again), log in, resume from the position kept. */
  async #open(): Promise<TextClient> {
    for (let delay = 20; ; delay = Math.min(delay * 2, 250)) {
      if (this.#stopped) throw new ConnectionClosedError('actor stopped');
      let client: TextClient | undefined;
      try {
        client = await connect({
          port: this.#s.port(),
          reconnect: { initialDelayMs: 20, maxDelayMs: 250 },
          pushWords: { words: ['send', 'room', 'friend', 'presence'] },
        });
        this.#watch(client);
        await client.login(this.#s.me, PASSWORD);
        await client.resume(this.#position);
        this.#client = client;
        return client;
      } catch (err) {
        client?.destroy();
        if (err instanceof ReplyError && err.type !== 'unavailable') throw err;
        await sleep(delay);
      }
    }
  }

  #watch(client: TextClient): void {
    // the library dials options.port on each reconnect attempt: a new pick per attempt, so a client
    // whose node died resumes on another (any node serves every user), and a node still down is left soon
    client.on('reconnecting', () => (client.options.port = this.#s.port()));
    client.on('inbox', (e) => {
      const epoch = client.inboxPosition?.epoch ?? '';
      this.live.push({ seq: e.seq, fields: e.fields, epoch });
      this.#position = { epoch, seq: e.seq };
    });
    client.on('resumed', () => {
      if (client.inboxPosition !== undefined) this.#position = client.inboxPosition;
    });
    client.on('streamReset', (err) => this.resets.push(`resume from seq ${this.#position.seq} of epoch ${this.#position.epoch}: ${err.message}`));
    client.on('close', () => {
      if (this.#inFlight && client === this.#client && !this.#crashed) this.#s.counters.lostReplies++;
    });
    client.on('reconnected', (loginError, resumeError) => {
      this.#s.counters.reconnects++;
      if (loginError !== undefined || resumeError !== undefined) {
        // the client cannot go on as it is: start a new one from the position kept
        this.#s.counters.refusedAfterReconnect++;
        this.#crash();
      }
    });
  }

  #crash(): void {
    const old = this.#client;
    if (old === undefined || this.#stopped) return;
    this.#crashed = true;
    this.#client = undefined;
    this.#thrownAway.resolve();
    this.#thrownAway = Promise.withResolvers<void>();
    this.#reopen();
    // the position is what was processed: a crash loses nothing of it (an app would store it as it goes)
    old.destroy();
  }

  /** Drops or crashes this client at random moments until `until`. */
  async #interrupt(until: number): Promise<void> {
    const { random, dropMeanMs, crashShare, counters } = this.#s;
    if (dropMeanMs <= 0) return;
    for (;;) {
      await sleep(Math.min(random.wait(dropMeanMs), until - Date.now()));
      if (Date.now() >= until || this.#stopped) return;
      const client = this.#client;
      if (client === undefined || !client.connected) continue;
      if (random.next() < crashShare) {
        counters.crashes++;
        this.#crash();
      } else {
        counters.drops++;
        client.drop();
      }
    }
  }
}
