import { CommandError, defineModule } from '../src/core/module-api.ts';

/**
 * Accounts made from each client address within the window, as their
 * times (attempts still being hashed count too, so a burst cannot pass the
 * limit together). Nothing else bounded account creation but the hashing
 * queue: one address made about 3.6 accounts a second, 300,000 a day, each
 * a stored row and hash, with no login ever needed. Per node.
 */
class AccountsPerAddress {
  readonly #made = new Map<string, number[]>();
  readonly #limit: number;
  readonly #windowMs: number;

  constructor(limit: number, windowMs: number) {
    this.#limit = limit;
    this.#windowMs = windowMs;
  }

  #recent(address: string, now: number): number[] {
    const times = (this.#made.get(address) ?? []).filter((t) => t > now - this.#windowMs);
    if (times.length === 0) this.#made.delete(address);
    else this.#made.set(address, times);
    return times;
  }

  /** Takes a place for one more account from `address`, or false when it made its limit within the window. */
  reserve(address: string, now: number): number | false {
    const times = this.#recent(address, now);
    if (times.length >= this.#limit) return false;
    times.push(now);
    this.#made.set(address, times);
    return now;
  }

  /** The attempt made no account: its place is free again. */
  release(address: string, at: number): void {
    const times = this.#made.get(address);
    const i = times?.indexOf(at) ?? -1;
    if (i >= 0) times!.splice(i, 1);
  }

  /** Forgets addresses whose accounts all left the window (the map holds only recent ones). */
  sweep(now: number): void {
    for (const address of [...this.#made.keys()]) this.#recent(address, now);
  }
}

/** `register,<user>,<password>`: `ok` once the account is committed; the connection stays as it was. */
export default defineModule({
  description: 'create an account',
  usage: { register: 'register,<user>,<password> -> ok' },
  options: {
    // off by default: local tools, tests and benchmarks make thousands of accounts from one loopback address
    'register-limit-ip': { type: 'number', default: 0, min: 0, description: 'accounts one client address may create within --register-window (0: no limit)' },
    'register-window': { type: 'number', default: 3600, min: 1, description: 'seconds over which --register-limit-ip counts' },
  },
  setup(ctx) {
    const windowMs = ctx.options['register-window'] * 1000;
    const limit = ctx.options['register-limit-ip'];
    const perAddress = limit === 0 ? undefined : new AccountsPerAddress(limit, windowMs);
    const sweeper = setInterval(() => perAddress?.sweep(Date.now()), Math.min(windowMs, 60_000));
    sweeper.unref();
    return {
      dispose() {
        clearInterval(sweeper);
      },
      commands: {
        async register(c, args) {
          if (args.length !== 2) throw new CommandError('syntax', 'usage: register,<user>,<password>');
          const address = c.session.remoteAddress;
          if (perAddress === undefined) return void (await c.server.users.register(args[0]!, args[1]!, address));
          const place = perAddress.reserve(address, Date.now());
          if (place === false) throw new CommandError('too_many_attempts', 'too many accounts created from your address; try again later');
          try {
            await c.server.users.register(args[0]!, args[1]!, address);
          } catch (err) {
            perAddress.release(address, place);
            throw err;
          }
        },
      },
    };
  },
});
