import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { registerHooks } from 'node:module';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { ModuleDefinition } from './module-api.ts';

/** A module file as imported: its definition, not yet set up. */
export type ImportedModule = { readonly name: string; readonly file: string; readonly def: ModuleDefinition };

/** A module that cannot be loaded; the message names it. */
export class ModuleLoadError extends Error {
  readonly module: string;
  /** A bad value of one of the module's flags: a usage error, like a core flag's (exit code 2 at start). */
  readonly usage: boolean;
  constructor(module: string, message: string, usage = false) {
    super(`module ${module}: ${message}`);
    this.usage = usage;
    this.name = 'ModuleLoadError';
    this.module = module;
  }
}

const MODULE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
const COMMAND_NAME = /^[^,\\]+$/;

/** `modules.txt`: one name a line, in order; blank lines and `#` comments ignored. */
export function readModuleList(listFile: string): string[] {
  let text: string;
  try {
    text = readFileSync(listFile, 'utf8');
  } catch (err) {
    throw new ModuleLoadError('(list)', `cannot read ${listFile}: ${(err as Error).message}`);
  }
  const names: string[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (!MODULE_NAME.test(line)) throw new ModuleLoadError(line, 'not a valid module name');
    if (names.includes(line)) throw new ModuleLoadError(line, `listed twice in ${listFile}`);
    names.push(line);
  }
  return names;
}

const VERSION_PARAM = 'modules-version';

/**
 * The version of a modules folder: a hash of every source file in it. Module
 * URLs carry it, so a reload after an edit imports fresh copies, while a
 * reload with nothing changed gets the very same module instances back:
 * Node never frees an imported ES module, so fresh copies on every SIGHUP
 * would grow memory with each reload.
 */
export function folderVersion(dir: string): string {
  const hash = createHash('sha256');
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const path = join(d, name);
      const stat = statSync(path, { throwIfNoEntry: false }); // follows links
      if (stat?.isDirectory() === true && name !== 'node_modules') walk(path);
      else if (stat?.isFile() === true && /\.(ts|js|mjs|json)$/.test(name)) hash.update(path).update('\0').update(readFileSync(path)).update('\0');
    }
  };
  walk(dir);
  return hash.digest('hex').slice(0, 16);
}

let hooked = false;

/**
 * A module's own helper files (`./rooms-store.ts`) are imported under the
 * same version as the module, so an edited helper takes effect on reload
 * too. Files outside the module's folder (the module API in src/) are never
 * versioned: every generation must share one CommandError class.
 */
function versionHelperImports(): void {
  if (hooked) return;
  hooked = true;
  registerHooks({
    resolve(specifier, context, nextResolve) {
      const resolved = nextResolve(specifier, context);
      const parent = context.parentURL === undefined ? undefined : new URL(context.parentURL);
      const version = parent?.searchParams.get(VERSION_PARAM);
      if (version === null || version === undefined || !resolved.url.startsWith('file:') || resolved.url.includes('?')) return resolved;
      const folder = dirname(fileURLToPath(parent!)) + sep;
      if (!fileURLToPath(resolved.url).startsWith(folder)) return resolved;
      return { ...resolved, url: `${resolved.url}?${VERSION_PARAM}=${version}` };
    },
  });
}

/**
 * Imports every listed module at the folder's current version (see
 * folderVersion): an edited file, or an edited helper it imports, takes
 * effect on SIGHUP. `owner` keeps the instances of two servers in one
 * process (tests) apart, since a module file may hold state.
 */
export async function loadModules(listFile: string, dir: string, owner: number): Promise<ImportedModule[]> {
  const names = readModuleList(listFile);
  versionHelperImports();
  const version = `${owner}-${folderVersion(dir)}`;
  const loaded: ImportedModule[] = [];
  for (const name of names) loaded.push(await importModule(name, dir, version));
  return loaded;
}

async function importModule(name: string, dir: string, version: string): Promise<ImportedModule> {
  const file = ['.ts', '.js'].map((ext) => resolve(join(dir, name + ext))).find((f) => existsSync(f));
  if (file === undefined) throw new ModuleLoadError(name, `no file ${name}.ts or ${name}.js in ${dir}`);
  let exported: unknown;
  try {
    exported = ((await import(`${pathToFileURL(file).href}?${VERSION_PARAM}=${version}`)) as { default?: unknown }).default;
  } catch (err) {
    throw new ModuleLoadError(name, `failed to load ${file}: ${(err as Error).message}`);
  }
  return { name, file, def: validate(name, exported) };
}

/** Checks the shape of a module's default export, so a bad module fails at load, not at its first request. */
function validate(name: string, value: unknown): ModuleDefinition {
  if (typeof value !== 'object' || value === null) {
    throw new ModuleLoadError(name, 'the default export must be defineModule({...})');
  }
  const def = value as ModuleDefinition;
  for (const [command, handler] of Object.entries(def.commands ?? {})) {
    if (!COMMAND_NAME.test(command)) throw new ModuleLoadError(name, `invalid command name ${JSON.stringify(command)}`);
    if (typeof handler !== 'function') throw new ModuleLoadError(name, `command ${command} is not a function`);
  }
  for (const [command, filter] of Object.entries(def.filters ?? {})) {
    if (typeof filter !== 'function') throw new ModuleLoadError(name, `filter for ${command} is not a function`);
  }
  for (const [hook, fn] of Object.entries(def.hooks ?? {})) {
    if (!['login', 'logout', 'online', 'offline'].includes(hook)) throw new ModuleLoadError(name, `unknown hook ${hook}`);
    if (typeof fn !== 'function') throw new ModuleLoadError(name, `hook ${hook} is not a function`);
  }
  if (def.migrations !== undefined && (!Array.isArray(def.migrations) || def.migrations.some((m) => typeof m !== 'string' && typeof m !== 'function'))) {
    throw new ModuleLoadError(name, 'migrations must be an array of SQL strings or functions');
  }
  if (def.routes !== undefined) {
    if (!Array.isArray(def.routes)) throw new ModuleLoadError(name, 'routes must be an array');
    for (const r of def.routes) {
      if (typeof r?.handler !== 'function' || typeof r.path !== 'string' || !r.path.startsWith('/')) {
        throw new ModuleLoadError(name, `invalid route ${JSON.stringify(r?.path)}`);
      }
    }
  }
  for (const key of ['init', 'setup', 'dispose'] as const) {
    if (def[key] !== undefined && typeof def[key] !== 'function') throw new ModuleLoadError(name, `${key} is not a function`);
  }
  if (def.requires !== undefined && (!Array.isArray(def.requires) || def.requires.some((r) => typeof r !== 'string'))) {
    throw new ModuleLoadError(name, 'requires must be an array of service names');
  }
  return def;
}

/** The same checks for what a module's `setup` returned. */
export function validateRuntime(name: string, runtime: unknown): void {
  if (runtime === undefined) return;
  if (typeof runtime !== 'object' || runtime === null) throw new ModuleLoadError(name, 'setup must return an object (or nothing)');
  validate(name, runtime);
}
