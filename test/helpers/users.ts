/** Fresh accounts and logged-in raw connections, so tests do not see each other's traffic. */
import { afterAll, beforeAll, expect } from 'vitest';
import { RawConnection } from './raw.ts';
import { removeDir, startServer, type TestServer } from './server.ts';

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

/**
 * Checks that nothing reached `c` beyond the frames the test has read: the
 * reply to a `nop` sent now must be the very next frame. A request's pushes
 * are queued before its reply is, so once the test has seen a request's
 * reply (or one of its pushes elsewhere), every push it made to `c` would
 * come before this answer: no waiting, and no passing by luck of timing.
 * Pushes from work with no reply (a close) need a witness first.
 */
export async function expectNoMoreFrames(c: RawConnection): Promise<void> {
  expect(await c.ask('nop')).toBe('');
}

/**
 * One in-process server for a test file, started before its tests and
 * stopped (with every connection the helpers opened) after them.
 */
export function serverFixture(args: string[] = []) {
  const opened: RawConnection[] = [];
  const fixture = {
    srv: undefined as unknown as TestServer,
    opened,
    loggedIn: (user: string) => loggedIn(fixture.srv.port, user, opened),
    users: (...prefixes: string[]) => freshUsers(fixture.srv.port, ...prefixes),
    async open(): Promise<RawConnection> {
      const c = await RawConnection.open(fixture.srv.port);
      opened.push(c);
      return c;
    },
  };
  beforeAll(async () => {
    fixture.srv = await startServer(args);
  });
  afterAll(async () => {
    for (const c of opened) c.close();
    await fixture.srv.stop();
    removeDir(fixture.srv.data);
  });
  return fixture;
}

export const errorOf = (type: string) => new RegExp(`^error,nonfatal,${type}(,.*)?$`);
