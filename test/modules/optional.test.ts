/** Each feature module is removable: without its line in modules.txt its commands are gone and the rest still work. */
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, removeDir, startServer, tempDir } from '../helpers/server.ts';
import { freshUsers, loggedIn } from '../helpers/users.ts';

const FEATURES: Record<string, string[][]> = {
  rooms: [['join', 'r'], ['say', 'r', 'x'], ['rooms'], ['members', 'r'], ['history', 'r', 'last', '1'], ['leave', 'r']],
  friends: [['friend_request', 'x'], ['friend_accept', 'x'], ['friend_deny', 'x'], ['friend_remove', 'x'], ['friends'], ['friend_requests']],
  presence: [
    ['presence', 'x'],
    ['typing', 'r', 'start'],
  ],
  info: [['version'], ['commands'], ['modules']],
  api: [['token', 'x']],
};

const allModules = readFileSync(join(ROOT, 'modules.txt'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l !== '' && !l.startsWith('#'));

describe.each(Object.keys(FEATURES))('without %s', (missing) => {
  it('its commands answer command_not_found and the others work', async () => {
    const dir = tempDir();
    const list = join(dir, 'modules.txt');
    writeFileSync(list, allModules.filter((m) => m !== missing).join('\n'));
    const srv = await startServer(['--modules-list', list], join(dir, 'data'));
    try {
      const [u, v] = await freshUsers(srv.port, 'opt', 'opt');
      const c = await loggedIn(srv.port, u!);
      for (const req of FEATURES[missing]!) expect(await c.ask(...req)).toMatch(/^error,nonfatal,command_not_found(,.*)?$/);
      expect(await c.ask('whoami')).toBe(`user,${u}`);
      expect(await c.ask('send', v!, 'hi')).toBe('ok');
      for (const [other, requests] of Object.entries(FEATURES)) {
        if (other === missing) continue;
        expect(await c.ask(...requests.at(-1)!)).not.toMatch(/command_not_found/);
      }
      c.close();
    } finally {
      await srv.stop();
      removeDir(dir);
    }
  });
});

describe('disabling a module loses nothing', () => {
  it('keeps the rooms tables while rooms is off, and they are back when it is on again', async () => {
    const dir = tempDir();
    const data = join(dir, 'data');
    const list = join(dir, 'modules.txt');
    const withRooms = await startServer([], data);
    const [u] = await freshUsers(withRooms.port, 'keep');
    const c = await loggedIn(withRooms.port, u!);
    c.send('join', 'kept');
    await c.nextN(2);
    c.send('say', 'kept', 'still here');
    await c.nextN(2);
    c.close();
    await withRooms.stop();
    writeFileSync(list, allModules.filter((m) => m !== 'rooms').join('\n'));
    const without = await startServer(['--modules-list', list], data);
    await without.stop();
    const again = await startServer([], data);
    const d = await loggedIn(again.port, u!);
    expect(await d.ask('history', 'kept', 'last', '1')).toMatch(/,still here$/);
    d.close();
    await again.stop();
    removeDir(dir);
  });
});
