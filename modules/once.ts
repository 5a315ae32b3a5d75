/**
 * `once,<key>,<command>[,args...]` (DELIVERY.md section 3): runs the command
 * the first time the user uses `<key>` within `--once-ttl` seconds, and
 * answers every repeat with the recorded reply, running nothing. The key
 * is recorded in the same transaction as the command's writes (the store
 * joins the command's own transactions to it), so a crash leaves both or
 * neither, and the pushes those writes cause go out once it committed. A
 * repeat that arrives while the first runs waits for it, and runs the
 * command itself when the first recorded nothing.
 *
 * Not recorded (the whole transaction rolls back, so a retry with the same
 * key runs the command again): `syntax` (the request was malformed),
 * `unavailable`, `unhandled`, `rate_limited`, `too_many_attempts`,
 * `not_logged_in` (the connection went away while the command ran: its
 * retry comes on the next connection, logged in again), and fatal errors.
 * Every other reply, errors such as `mailbox_full` included, is.
 */
import { CommandError, defineModule, type CommandContext, type Reply } from '../src/core/module-api.ts';
import { ONCE_MIGRATIONS, OnceStore, type Outcome } from './once-store.ts';

const MAX_KEY = 64;
/**
 * Commands that check a password: argon2 on the hash threads for tens of
 * milliseconds, longer behind the hash queue. Run inside the key's
 * transaction they would hold the store (SQLite's one connection) that long
 * from every other user: one user pipelining them stalled everyone's
 * writes (2.1 s). They run before the key's transaction instead, and the
 * key is recorded in a commit of its own right after. `login` writes
 * nothing the key must commit with; a crash between `register`'s commit and
 * its key's leaves the account, and a retry then answers `name_taken`, as a
 * retried plain `register` whose reply was lost does.
 */
const CHECKS_PASSWORD = new Set(['login', 'register']);

/** Errors that say nothing lasting about the command: a retry may do better. */
const NOT_RECORDED = new Set(['syntax', 'unavailable', 'unhandled', 'rate_limited', 'too_many_attempts', 'not_logged_in']);
const SWEEP_MS = 60_000;

/** A thrown outcome: the transaction rolls back, the error reaches the client. */
class Unrecorded extends Error {
  readonly error: CommandError;
  constructor(error: CommandError) {
    super(error.message);
    this.error = error;
  }
}

export default defineModule({
  description: 'exactly-once requests: a repeat of a key gets the recorded reply',
  usage: { once: 'once,<key>,<command>[,args...] -> the reply <command> got the first time <key> was used' },
  options: {
    'once-ttl': { type: 'number', default: 86400, min: 1, description: 'seconds a once key is remembered from its first use' },
    'once-max-keys': {
      type: 'number',
      default: 10000,
      min: 1,
      description: 'once keys remembered per user: past them the oldest are forgotten before their --once-ttl',
    },
  },
  migrations: ONCE_MIGRATIONS,
  setup(ctx) {
    const store = new OnceStore(ctx.server.store);
    const ttlMs = ctx.options['once-ttl'] * 1000;
    /** Runs in flight, by user and key: a repeat waits for the first. */
    const running = new Map<string, Promise<Outcome>>();

    const maxKeys = ctx.options['once-max-keys'];
    /**
     * Keys each user claimed here since its keys were last trimmed. Without
     * a bound, one user at the default request rate (500 a second) stored 43
     * million keys a day, about 200 bytes each before any reply: a user's
     * keys past its newest `maxKeys` are forgotten, by a trim after every
     * tenth of them and at every sweep.
     */
    const fresh = new Map<number, number>();
    const trimming = new Set<number>();
    const trimStep = Math.max(1, Math.floor(maxKeys / 10));
    const trim = (userId: number) => {
      fresh.delete(userId);
      if (trimming.has(userId)) return;
      trimming.add(userId);
      store
        .trim(userId, maxKeys)
        .catch((err: unknown) => ctx.log.warn({ err: (err as Error).message, user: userId }, 'once keys not trimmed; will retry'))
        .finally(() => trimming.delete(userId));
    };
    const countKey = (userId: number) => {
      const n = (fresh.get(userId) ?? 0) + 1;
      if (n >= trimStep) trim(userId);
      else fresh.set(userId, n);
    };

    const sweeper = setInterval(() => {
      store.expire(Date.now() - ttlMs).catch((err: unknown) => ctx.log.warn({ err: (err as Error).message }, 'once keys not expired; will retry'));
      for (const userId of [...fresh.keys()]) trim(userId);
    }, SWEEP_MS);
    sweeper.unref();

    /** Runs the command: the outcome to record, or a thrown Unrecorded. */
    const outcomeOf = async (c: CommandContext, fields: string[]): Promise<Outcome> => {
      try {
        const reply: Reply = await c.server.invoke(c, fields);
        return { reply: reply === undefined ? null : [...reply] };
      } catch (err) {
        const e = err instanceof CommandError ? err : new CommandError('unhandled');
        if (e.fatal || NOT_RECORDED.has(e.type)) throw new Unrecorded(e);
        return { error: e.type, info: e.info };
      }
    };

    /** In a transaction: claims the key and records `outcome`, or returns what a run elsewhere recorded first. */
    const claimAndRecord = (c: CommandContext, userId: number, key: string, outcome: () => Promise<Outcome>): Promise<Outcome> =>
      ctx.server.store.transaction(async (tx) => {
        const claimed = await store.claim(tx, userId, key, Date.now(), ttlMs);
        if (claimed !== true) return claimed;
        const result = await outcome();
        const recorded = JSON.stringify(result);
        // kept for --once-ttl: a big reply (a history page) costs the user's byte budget like a payload it sent,
        // or a stream of tiny `once,<new key>,history,...` requests would fill the disk at the speed of its writes
        c.server.users.chargeBytes(userId, recorded.length);
        await store.record(tx, userId, key, recorded);
        // counted once committed: a trim started inside this transaction's call chain would join it, and on
        // PostgreSQL its statements could reach the connection after the COMMIT (a SAVEPOINT outside any
        // transaction fails, and the trim with it)
        ctx.server.store.afterCommit(() => countKey(userId));
        return result;
      });

    const run = async (c: CommandContext, userId: number, key: string, fields: string[]): Promise<Outcome> => {
      if (!CHECKS_PASSWORD.has(fields[0]!)) return claimAndRecord(c, userId, key, () => outcomeOf(c, fields));
      // run before the key's transaction (see CHECKS_PASSWORD); a run elsewhere that recorded first wins
      const earlier = await store.recorded(userId, key, Date.now(), ttlMs);
      if (earlier !== undefined) return earlier;
      const outcome = await outcomeOf(c, fields);
      return claimAndRecord(c, userId, key, async () => outcome);
    };

    return {
      dispose() {
        clearInterval(sweeper);
      },
      commands: {
        async once(c, args) {
          const user = c.session.requireUser();
          const key = args[0] ?? '';
          if (key === '' || [...key].length > MAX_KEY) throw new CommandError('syntax', `once needs a key of 1 to ${MAX_KEY} characters`);
          if (args.length < 2 || args[1] === '') throw new CommandError('syntax', 'usage: once,<key>,<command>[,args...]');
          if (args[1] === 'req' || args[1] === 'once')
            throw new CommandError('syntax', `${args[1]} cannot be run by once (the usual nesting is req,<id>,once,<key>,...)`);
          const id = `${user.id}\n${key}`;
          let result: Outcome;
          for (;;) {
            let outcome = running.get(id);
            const waiting = outcome !== undefined;
            if (outcome === undefined) {
              const mine = run(c, user.id, key, args.slice(1));
              running.set(id, mine);
              const forget = () => {
                if (running.get(id) === mine) running.delete(id);
              };
              mine.then(forget, forget);
              outcome = mine;
            }
            try {
              result = await outcome;
              break;
            } catch (err) {
              // the run this repeat waited for recorded nothing (its connection went away, say): this one runs it
              if (waiting && err instanceof Unrecorded) continue;
              // each waiter gets its own error object: `req` adds its prefix to the one it throws
              const e = err instanceof Unrecorded ? err.error : err;
              if (e instanceof CommandError) throw new CommandError(e.type, e.info, e.fatal);
              throw e;
            }
          }
          if ('error' in result) throw new CommandError(result.error, result.info);
          return result.reply === null ? undefined : result.reply;
        },
      },
    };
  },
});
