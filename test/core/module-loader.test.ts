/**
 * The module loader: modules.txt parsing, and every shape check of a
 * module's default export, each failing with an error that names the module.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { folderVersion, loadModules, ModuleLoadError, readModuleList, validateRuntime } from '../../src/core/module-loader.ts';
import { removeDir, tempDir } from '../helpers/server.ts';

let dir: string;
let owner = 1000; // apart from the servers of other test files in this process

beforeEach(() => {
  dir = tempDir();
});

afterEach(() => {
  removeDir(dir);
});

function list(text: string): string {
  const file = join(dir, 'modules.txt');
  writeFileSync(file, text);
  return file;
}

/** Loads one module file with this text; resolves with the error it fails with. */
async function loadError(name: string, text: string): Promise<ModuleLoadError> {
  writeFileSync(join(dir, `${name}.js`), text);
  try {
    await loadModules(list(name), dir, ++owner);
  } catch (err) {
    expect(err).toBeInstanceOf(ModuleLoadError);
    expect((err as ModuleLoadError).module).toBe(name);
    expect((err as Error).message.startsWith(`module ${name}: `)).toBe(true);
    return err as ModuleLoadError;
  }
  throw new Error(`module ${name} loaded`);
}

describe('modules.txt', () => {
  it('lists names in order; blank lines, comments and CRLF line ends are fine', () => {
    expect(readModuleList(list('# core\r\nnop\r\n\r\n  req  \n# feature modules\nrooms.v2\nmy-mod_1\n'))).toEqual(['nop', 'req', 'rooms.v2', 'my-mod_1']);
  });

  it('refuses a bad name, a name listed twice and a missing list, naming them', () => {
    expect(() => readModuleList(list('nop\n../escape\n'))).toThrow(new ModuleLoadError('../escape', 'not a valid module name'));
    expect(() => readModuleList(list('has space'))).toThrow('module has space: not a valid module name');
    expect(() => readModuleList(list('nop\nreq\nnop'))).toThrow(/^module nop: listed twice in /);
    const err = (() => {
      try {
        readModuleList(join(dir, 'nowhere.txt'));
      } catch (e) {
        return e as ModuleLoadError;
      }
    })();
    expect(err?.module).toBe('(list)');
    expect(err?.message).toMatch(/^module \(list\): cannot read .*nowhere\.txt/);
  });
});

describe('loading', () => {
  it('imports the listed modules in order, with their definitions', async () => {
    writeFileSync(join(dir, 'b.js'), 'export default { commands: { bee: () => ["b"] } };\n');
    writeFileSync(join(dir, 'a.ts'), 'export default { commands: { ay: (): string[] => ["a"] } };\n');
    const loaded = await loadModules(list('b\na'), dir, ++owner);
    expect(loaded.map((m) => [m.name, Object.keys(m.def.commands ?? {})])).toEqual([
      ['b', ['bee']],
      ['a', ['ay']],
    ]);
    expect(loaded[1]!.file).toBe(join(dir, 'a.ts'));
  });

  it('names the module whose file is missing or does not load', async () => {
    await expect(loadModules(list('ghost'), dir, ++owner)).rejects.toThrow(`module ghost: no file ghost.ts or ghost.js in ${dir}`);
    expect((await loadError('broken', 'export default {\n')).message).toMatch(/^module broken: failed to load .*broken\.js: /);
    expect((await loadError('throws', 'throw new Error("at import");\n')).message).toContain('at import');
  });

  it('checks the shape of the default export, naming the module and the part', async () => {
    const cases: [string, string][] = [
      ['export default 42;', 'the default export must be defineModule({...})'],
      ['export const x = 1;', 'the default export must be defineModule({...})'],
      ['export default { commands: { "a,b": () => [] } };', 'invalid command name "a,b"'],
      ['export default { commands: { go: "nope" } };', 'command go is not a function'],
      ['export default { filters: { go: 1 } };', 'filter for go is not a function'],
      ['export default { hooks: { connect() {} } };', 'unknown hook connect'],
      ['export default { hooks: { login: 1 } };', 'hook login is not a function'],
      ['export default { migrations: "CREATE TABLE t (x)" };', 'migrations must be an array of SQL strings or functions'],
      ['export default { migrations: [1] };', 'migrations must be an array of SQL strings or functions'],
      ['export default { routes: {} };', 'routes must be an array'],
      ['export default { routes: [{ method: "GET", path: "no-slash", handler() {} }] };', 'invalid route "no-slash"'],
      ['export default { routes: [{ method: "GET", path: "/x" }] };', 'invalid route "/x"'],
      ['export default { setup: {} };', 'setup is not a function'],
      ['export default { dispose: 1 };', 'dispose is not a function'],
      ['export default { requires: "rooms" };', 'requires must be an array of service names'],
      ['export default { requires: [1] };', 'requires must be an array of service names'],
    ];
    let n = 0;
    for (const [text, message] of cases) {
      const name = `bad${++n}`;
      expect((await loadError(name, `${text}\n`)).message).toBe(`module ${name}: ${message}`);
    }
  });

  it('checks what setup returns the same way', () => {
    expect(() => validateRuntime('m', undefined)).not.toThrow();
    expect(() => validateRuntime('m', { commands: { ok: () => undefined } })).not.toThrow();
    expect(() => validateRuntime('m', 'commands')).toThrow(new ModuleLoadError('m', 'setup must return an object (or nothing)'));
    expect(() => validateRuntime('m', { commands: { x: 1 } })).toThrow('module m: command x is not a function');
  });
});

describe('folderVersion', () => {
  it('changes when a source file changes, and only then', () => {
    writeFileSync(join(dir, 'a.ts'), 'export default {};\n');
    writeFileSync(join(dir, 'notes.txt'), 'not source');
    const first = folderVersion(dir);
    expect(folderVersion(dir)).toBe(first);
    writeFileSync(join(dir, 'notes.txt'), 'still not source');
    expect(folderVersion(dir)).toBe(first);
    writeFileSync(join(dir, 'a.ts'), 'export default { commands: {} };\n');
    expect(folderVersion(dir)).not.toBe(first);
  });
});
