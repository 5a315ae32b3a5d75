import { CommandError, fail } from './errors.ts';
import type { UserRef, UsersApi } from './module-api.ts';
import { FailureCounter, type PasswordHasher } from './passwords.ts';
import { nameKey } from '../store/store.ts';
import type { CoreData, UserRecord } from '../store/core-data.ts';
import { ThrottledLog } from './throttled-log.ts';
import type { LoginThrottle } from '../bus/shared-throttle.ts';
import type { TrustedAddresses } from '../bus/shared-trust.ts';
import { UserBudget, type BudgetOptions } from './user-budget.ts';
import type { Logger } from 'pino';

const NAME_CHARS = /^[A-Za-z0-9_-]+$/;
const MAX_NAME_LENGTH = 32;
/** The one per-name bucket of every name too long to exist: a megabyte of name must not be kept as a key. */
const IMPOSSIBLE_NAME = '\u0000too long';

export type UsersOptions = BudgetOptions & {
  loginFailLimit: number;
  loginFailLimitIp: number;
  loginFailWindowMs: number;
};

/** Addresses remembered per name, and names remembered, for the owner's own throttling bucket. */
export const TRUSTED_PER_NAME = 3;
const TRUSTED_NAMES = 100_000;
/** At most one `login failed` line per this interval; the others are counted in the next one. */
const FAILED_LOG_INTERVAL_MS = 1000;

/** Accounts: PROTOCOL.md's register/login rules, hashing, and login throttling. */
export class Users implements UsersApi {
  readonly #store: CoreData;
  readonly hasher: PasswordHasher;
  readonly #byName: LoginThrottle;
  readonly #byIp: LoginThrottle;
  readonly #log: Logger;
  /** Names never change and accounts are never deleted, so look-ups are cached (bounded). */
  readonly #cache = new Map<number, UserRef>();
  readonly #byKey = new Map<string, UserRef>();
  /** Counters read by metrics. */
  readonly stats = { loginFailures: 0, loginThrottled: 0 };
  /** Per-user request and byte budgets (the session and the HTTP gateway charge them). */
  readonly budget: UserBudget;
  /** Name key to the addresses it last logged in from, most recent first. */
  readonly #trusted = new Map<string, string[]>();
  /** In a cluster, the same for every node's logins (shared-trust.ts). */
  readonly #sharedTrust: TrustedAddresses | undefined;
  readonly #failedLog: ThrottledLog;

  /** `throttles`: counters shared by the nodes of a cluster (shared-throttle.ts); in memory otherwise. */
  constructor(
    store: CoreData,
    hasher: PasswordHasher,
    options: UsersOptions,
    log: Logger,
    throttles?: { byName: LoginThrottle; byIp: LoginThrottle },
    sharedTrust?: TrustedAddresses,
  ) {
    this.#store = store;
    this.#sharedTrust = sharedTrust;
    this.hasher = hasher;
    this.#log = log;
    this.#byName = throttles?.byName ?? new FailureCounter(options.loginFailLimit, options.loginFailWindowMs);
    this.#byIp = throttles?.byIp ?? new FailureCounter(options.loginFailLimitIp, options.loginFailWindowMs);
    this.budget = new UserBudget(options);
    this.#failedLog = new ThrottledLog(log, 'login failed', FAILED_LOG_INTERVAL_MS);
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

  async register(name: string, password: string, remoteAddress = ''): Promise<UserRef> {
    checkName(name);
    if ((await this.#store.findUser(nameKey(name))) !== undefined) fail('name_taken', `the name ${name} is taken`);
    if ([...password].length < 8) fail('password_too_short');
    const hash = await this.hasher.hash(password, remoteAddress);
    const row = await this.#store.createUser(name, nameKey(name), hash);
    if (row === undefined) fail('name_taken', `the name ${name} is taken`);
    this.#log.info({ user: name }, 'registered');
    return this.#ref(row.id, row.name);
  }

  /**
   * Checks a password under the throttling of the security section: the
   * attempt is reserved against the per-name and per-address limits before
   * the hash is computed (see FailureCounter), and settled after it. An
   * address the name recently logged in from counts its failures for that
   * name apart from everyone else's, so strangers' guesses cannot lock the
   * owner out of it.
   */
  async authenticate(name: string, password: string, remoteAddress: string): Promise<UserRef> {
    const key = nameKey(name);
    const possible = key.length <= MAX_NAME_LENGTH;
    const trustedHere = possible && this.#isTrusted(key, remoteAddress);
    // in a cluster the owner may have last logged in on another node: asked while the address's attempt is reserved
    const [ipTaken, trusted] = await Promise.all([
      this.#byIp.reserve(remoteAddress, Date.now()),
      trustedHere || !possible || this.#sharedTrust === undefined ? trustedHere : this.#sharedTrust.has(key, remoteAddress),
    ]);
    const nameBucket = !possible ? IMPOSSIBLE_NAME : trusted ? `${key}\n${remoteAddress}` : key;
    const nameTaken = ipTaken && (await this.#byName.reserve(nameBucket, Date.now()));
    if (!nameTaken) {
      if (ipTaken) this.#byIp.release(remoteAddress);
      this.stats.loginThrottled++;
      this.#failedLog.note({ user: name.slice(0, 64), address: remoteAddress, reason: 'too_many_attempts' });
      throw new CommandError('too_many_attempts', 'too many failed logins; try again later');
    }
    let row: UserRecord | undefined;
    let ok: boolean;
    try {
      row = await this.#store.findUser(key);
      ok = await this.hasher.verify(row?.hash, password, remoteAddress);
    } catch (err) {
      this.#byName.release(nameBucket);
      this.#byIp.release(remoteAddress);
      throw err;
    }
    if (!ok || row === undefined) {
      const at = Date.now();
      this.#byName.fail(nameBucket, at);
      this.#byIp.fail(remoteAddress, at);
      this.stats.loginFailures++;
      this.#failedLog.note({ user: name.slice(0, 64), address: remoteAddress, reason: 'wrong_user_or_password' });
      fail('wrong_user_or_password');
    }
    this.#byIp.release(remoteAddress);
    this.#byName.release(nameBucket);
    this.#byName.reset(nameBucket);
    this.#trust(key, remoteAddress);
    if (this.hasher.needsRehash(row.hash)) await this.#upgradeHash(row.id, password, remoteAddress);
    return this.#ref(row.id, row.name);
  }

  charge(userId: number, bytes: number): void {
    this.budget.charge(userId, bytes);
  }

  chargeBytes(userId: number, bytes: number): void {
    this.budget.chargeBytes(userId, bytes);
  }

  sweep(now: number): void {
    this.#byName.sweep(now);
    this.#byIp.sweep(now);
    this.#failedLog.flush();
    this.budget.sweep();
  }

  #isTrusted(key: string, address: string): boolean {
    return this.#trusted.get(key)?.includes(address) ?? false;
  }

  /** Remembers the address of a successful login: the latest few per name, for a bounded number of names. */
  #trust(key: string, address: string): void {
    this.#sharedTrust?.add(key, address);
    const list = this.#trusted.get(key) ?? [];
    this.#trusted.delete(key); // re-inserted last: the map's order is least recently used first
    this.#trusted.set(key, [address, ...list.filter((a) => a !== address)].slice(0, TRUSTED_PER_NAME));
    if (this.#trusted.size > TRUSTED_NAMES) this.#trusted.delete(this.#trusted.keys().next().value!);
  }

  async #upgradeHash(id: number, password: string, remoteAddress: string): Promise<void> {
    try {
      await this.#store.updateHash(id, await this.hasher.hash(password, remoteAddress));
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
  if (name.length > MAX_NAME_LENGTH || !NAME_CHARS.test(name)) fail('invalid_name');
}
