/** Fresh accounts and logged-in raw connections, so tests do not see each other's traffic. */
import { expect } from 'vitest';
import { RawConnection } from './raw.ts';

export const PW = 'password1';
let unique = 0;

export async function freshUsers(port: number, ...prefixes: string[]): Promise<string[]> {
  const c = await RawConnection.open(port);
  const names: string[] = [];
  for (const p of prefixes) {
    const name = `${p}${++unique}_${process.pid % 1000}`;
    expect(await c.ask('register', name, PW)).toBe('ok');
    names.push(name);
  }
  c.close();
  return names;
}

export async function loggedIn(port: number, user: string, opened?: RawConnection[]): Promise<RawConnection> {
  const c = await RawConnection.open(port);
  opened?.push(c);
  expect(await c.ask('login', user, PW)).toBe('ok');
  return c;
}

/** Lets in-flight frames arrive, then checks nothing more came. */
export async function expectSilence(c: RawConnection, ms = 150): Promise<void> {
  const before = c.frames.length;
  await new Promise((r) => setTimeout(r, ms));
  expect(c.frames.slice(before)).toEqual([]);
}
