/**
 * The module set: a reload puts a whole new set in force or leaves the old
 * one exactly as it was; helper files are re-imported with their module;
 * an unchanged reload keeps the running instances; `requires` is checked.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { errorCatalogue } from '../../src/core/errors.ts';
import { ROOT, removeDir, spawnServer, startServer, tempDir, type TestServer } from '../helpers/server.ts';
import { eventually } from '../helpers/eventually.ts';
import { RawConnection } from '../helpers/raw.ts';

const API = JSON.stringify(join(ROOT, 'src/core/module-api.ts'));

let dir: string;
let srv: TestServer | undefined;

afterEach(async () => {
  await srv?.stop();
  srv = undefined;
  removeDir(dir);
});

function modules(files: Record<string, string>, list: string[]): { dir: string; list: string } {
  const m = join(dir, 'modules');
  mkdirSync(m, { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(m, name), text);
  writeFileSync(join(dir, 'modules.txt'), list.join('\n'));
  return { dir: m, list: join(dir, 'modules.txt') };
}

async function start(m: { dir: string; list: string }, extra: string[] = []): Promise<RawConnection> {
  srv = await startServer(['--modules-dir', m.dir, '--modules-list', m.list, ...extra], join(dir, 'data'));
  return RawConnection.open(srv.port);
}

const ALPHA = (word: string, extraError = '') => `import { defineModule, CommandError } from ${API};
export default defineModule({
  options: { 'alpha-word': { type: 'string', default: ${JSON.stringify(word)}, description: 'the word' } },
  errors: { alpha_err: { fatal: false, info: 'alpha' } ${extraError} },
  setup(ctx) {
    const word: string = ctx.options['alpha-word'];
    return { commands: { alpha: () => ['alpha', word], alpha_fail: () => { throw new CommandError('alpha_err'); } } };
  },
});
`;

describe('module set', () => {
  it('types setup options from the declaration and routes what setup returns', async () => {
    dir = tempDir();
    const c = await start(modules({ 'alpha.ts': ALPHA('hello') }, ['alpha']), ['--alpha-word', 'given']);
    expect(await c.ask('alpha')).toBe('alpha,given');
    expect(await c.ask('alpha_fail')).toBe('error,nonfatal,alpha_err,alpha');
    c.close();
  });

  it('a failed reload leaves no trace: commands, option values and error types stay as they were', async () => {
    dir = tempDir();
    const m = modules({ 'alpha.ts': ALPHA('one') }, ['alpha']);
    const c = await start(m);
    const before = srv!.server.core.api.options['alpha-word'];
    writeFileSync(join(m.dir, 'alpha.ts'), ALPHA('two', ", beta_err: { fatal: false, info: 'beta' }"));
    writeFileSync(join(m.dir, 'broken.ts'), `export default { setup() { throw new Error('no luck'); } };\n`);
    writeFileSync(m.list, 'alpha\nbroken');
    expect(await srv!.server.reload()).toBe(false);
    expect(await c.ask('alpha')).toBe('alpha,one');
    expect(srv!.server.core.api.options['alpha-word']).toBe(before);
    expect(errorCatalogue().has('beta_err')).toBe(false);
    expect(errorCatalogue().has('alpha_err')).toBe(true);
    writeFileSync(m.list, 'alpha');
    expect(await srv!.server.reload()).toBe(true);
    expect(await c.ask('alpha')).toBe('alpha,two');
    expect(errorCatalogue().has('beta_err')).toBe(true);
    c.close();
  });

  it("re-imports a module's helper files on reload, and keeps unchanged modules running (a real process: Node's loader hooks)", async () => {
    dir = tempDir();
    const greet = `import { defineModule } from ${API};
import { text } from './greet-text.ts';
const g = globalThis;
export default defineModule({
  setup() {
    g.greetSetups = (g.greetSetups ?? 0) + 1;
    return { commands: { greet: () => ['greet', text, String(g.greetSetups), String(g.greetDisposals ?? 0)] }, dispose() { g.greetDisposals = (g.greetDisposals ?? 0) + 1; } };
  },
});
`;
    const m = modules({ 'greet.ts': greet, 'greet-text.ts': `export const text = 'first';\n` }, ['greet']);
    const s = await spawnServer(['--modules-dir', m.dir, '--modules-list', m.list, '--data', join(dir, 'data')]);
    try {
      const c = await RawConnection.open(s.port);
      const reloaded = async (n: number) => {
        s.proc.kill('SIGHUP');
        await eventually(() => expect(s.lines.filter((l) => l.includes('modules reloaded'))).toHaveLength(n));
      };
      expect(await c.ask('greet')).toBe('greet,first,1,0');
      await reloaded(1);
      expect(await c.ask('greet')).toBe('greet,first,1,0');
      writeFileSync(join(m.dir, 'greet-text.ts'), `export const text = 'second';\n`);
      await reloaded(2);
      expect(await c.ask('greet')).toBe('greet,second,2,1');
      c.close();
    } finally {
      s.proc.kill('SIGKILL');
    }
  });

  it('refuses a module whose required service nobody provides, naming its file', async () => {
    dir = tempDir();
    const needy = `export default { requires: ['weather'], commands: { needy: () => ['needy'] } };\n`;
    const m = modules({ 'needy.ts': needy, 'alpha.ts': ALPHA('x') }, ['alpha']);
    const c = await start(m);
    writeFileSync(m.list, 'alpha\nneedy');
    await expect(srv!.server.core.moduleSet.load()).rejects.toThrow(/module needy: .*needy\.ts requires the service "weather"/);
    expect(await c.ask('needy')).toMatch(/^error,nonfatal,command_not_found/);
    c.close();
  });
});
