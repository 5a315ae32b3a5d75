import { CommandError, fail } from './errors.ts';
import type { UserRef, UsersApi } from './module-api.ts';
import { FailureCounter, type PasswordHasher } from './passwords.ts';
import { nameKey } from '../store/store.ts';
import type { CoreData } from '../store/core-data.ts';
import type { Logger } from 'pino';

const NAME_CHARS = /^[A-Za-z0-9_-]+$/;

export type UsersOptions = {
  loginFailLimit: number;
  loginFailLimitIp: number;
  loginFailWindowMs: number;
};

/** Accounts: PROTOCOL.md's register/login rules, hashing, and login throttling. */
export class Users implements UsersApi {
  readonly #store: CoreData;
  readonly hasher: PasswordHasher;
  readonly #byName: FailureCounter;
  readonly #byIp: FailureCounter;
  readonly #log: Logger;
  /** Names never change and accounts are never deleted, so look-ups are cached (bounded). */
  readonly #cache = new Map<number, UserRef>();
  readonly #byKey = new Map<string, UserRef>();
  /** Counters read by metrics. */
  readonly stats = { loginFailures: 0, loginThrottled: 0 };

  constructor(store: CoreData, hasher: PasswordHasher, options: UsersOptions, log: Logger) {
    this.#store = store;
    this.hasher = hasher;
    this.#log = log;
    this.#byName = new FailureCounter(options.loginFailLimit, options.loginFailWindowMs);
    this.#byIp = new FailureCounter(options.loginFailLimitIp, options.loginFailWindowMs);
  }

  async find(name: string): Promise<UserRef | null> {
    const key = nameKey(name);
    const cached = this.#byKey.get(key);
    if (cached !== undefined) return cached;
    const row = await this.#store.findUser(key);
    if (row === undefined) return null;
    const ref = this.#ref(row.id, row.name);
    if (this.#byKey.size > 100_000) this.#byKey.clear();
    this.#byKey.set(key, ref);
    return ref;
  }

  /** The cached account, when it was looked up before (names never change). */
  cachedById(id: number): UserRef | undefined {
    return this.#cache.get(id);
  }

  async byId(id: number): Promise<UserRef | null> {
    const cached = this.#cache.get(id);
    if (cached !== undefined) return cached;
    const row = await this.#store.userById(id);
    return row === undefined ? null : this.#ref(row.id, row.name);
  }

  async register(name: string, password: string): Promise<UserRef> {
    checkName(name);
    if ((await this.#store.findUser(nameKey(name))) !== undefined) fail('name_taken', `the name ${name} is taken`);
    if ([...password].length < 8) fail('password_too_short');
    const hash = await this.hasher.hash(password);
    const row = await this.#store.createUser(name, nameKey(name), hash);
    if (row === undefined) fail('name_taken', `the name ${name} is taken`);
    this.#log.info({ user: name }, 'registered');
    return this.#ref(row.id, row.name);
  }

  async authenticate(name: string, password: string, remoteAddress: string): Promise<UserRef> {
    const key = nameKey(name);
    const now = Date.now();
    if (this.#byName.blocked(key, now) || this.#byIp.blocked(remoteAddress, now)) {
      this.stats.loginThrottled++;
      throw new CommandError('too_many_attempts', 'too many failed logins; try again later');
    }
    const row = await this.#store.findUser(key);
    const ok = await this.hasher.verify(row?.hash, password);
    if (!ok || row === undefined) {
      const at = Date.now();
      this.#byName.fail(key, at);
      this.#byIp.fail(remoteAddress, at);
      this.stats.loginFailures++;
      fail('wrong_user_or_password');
    }
    this.#byName.reset(key);
    if (this.hasher.needsRehash(row.hash)) await this.#upgradeHash(row.id, password);
    return this.#ref(row.id, row.name);
  }

  sweep(now: number): void {
    this.#byName.sweep(now);
    this.#byIp.sweep(now);
  }

  async #upgradeHash(id: number, password: string): Promise<void> {
    try {
      await this.#store.updateHash(id, await this.hasher.hash(password));
    } catch (err) {
      // The login itself succeeded; the old hash stays valid.
      this.#log.warn({ err: String(err) }, 'could not upgrade a password hash');
    }
  }

  #ref(id: number, name: string): UserRef {
    let ref = this.#cache.get(id);
    if (ref === undefined) {
      ref = Object.freeze({ id, name });
      if (this.#cache.size > 100_000) this.#cache.clear();
      this.#cache.set(id, ref);
    }
    return ref;
  }
}

/** PROTOCOL.md section 3, `register`: too short first, then the character set and length. */
export function checkName(name: string): void {
  if ([...name].length < 3) fail('name_too_short');
  if (name.length > 32 || !NAME_CHARS.test(name)) fail('invalid_name');
}
