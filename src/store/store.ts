/**
 * What the core keeps durably. Every write is committed (fsync'd) before the
 * method returns, so a caller may acknowledge it at once.
 */
import type { ModuleDb } from '../core/module-api.ts';

export type UserRecord = { readonly id: number; readonly name: string; readonly hash: string };
export type StoredPush = { readonly id: number; readonly payload: string };

export interface Store {
  readonly db: ModuleDb;
  findUser(nameKey: string): UserRecord | undefined;
  userById(id: number): UserRecord | undefined;
  /** Returns undefined when the name (case-insensitively) is taken. */
  createUser(name: string, hash: string): UserRecord | undefined;
  updateHash(id: number, hash: string): void;
  mailboxCount(userId: number): number;
  mailboxAdd(userId: number, payload: string): void;
  mailboxAfter(userId: number, afterId: number, limit: number): StoredPush[];
  mailboxDeleteUpTo(userId: number, lastId: number): void;
  /** Applies the owner's migrations not yet applied, each in its own transaction. */
  migrate(owner: string, migrations: readonly string[]): void;
  close(): void;
}

export function nameKey(name: string): string {
  return name.toLowerCase();
}
