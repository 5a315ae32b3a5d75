import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ModuleDefinition } from './module-api.ts';

export type LoadedModule = { readonly name: string; readonly file: string; readonly def: ModuleDefinition };

/** A module that cannot be loaded; the message names it. */
export class ModuleLoadError extends Error {
  readonly module: string;
  constructor(module: string, message: string) {
    super(`module ${module}: ${message}`);
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

let generation = 0;

/**
 * Imports every listed module. A reload imports fresh copies (the URL carries
 * a generation), so an edited file takes effect on SIGHUP.
 */
export async function loadModules(listFile: string, dir: string): Promise<LoadedModule[]> {
  const names = readModuleList(listFile);
  generation++;
  const loaded: LoadedModule[] = [];
  const owners = new Map<string, string>();
  for (const name of names) {
    const mod = await importModule(name, dir, generation);
    for (const command of Object.keys(mod.def.commands ?? {})) {
      const owner = owners.get(command);
      if (owner !== undefined) {
        throw new ModuleLoadError(name, `command ${command} is already defined by module ${owner}`);
      }
      owners.set(command, name);
    }
    loaded.push(mod);
  }
  return loaded;
}

async function importModule(name: string, dir: string, gen: number): Promise<LoadedModule> {
  const file = ['.ts', '.js'].map((ext) => resolve(join(dir, name + ext))).find((f) => existsSync(f));
  if (file === undefined) throw new ModuleLoadError(name, `no file ${name}.ts or ${name}.js in ${dir}`);
  let exported: unknown;
  try {
    exported = ((await import(`${pathToFileURL(file).href}?generation=${gen}`)) as { default?: unknown }).default;
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
  if (def.migrations !== undefined && (!Array.isArray(def.migrations) || def.migrations.some((m) => typeof m !== 'string'))) {
    throw new ModuleLoadError(name, 'migrations must be an array of SQL strings');
  }
  if (def.routes !== undefined) {
    if (!Array.isArray(def.routes)) throw new ModuleLoadError(name, 'routes must be an array');
    for (const r of def.routes) {
      if (typeof r?.handler !== 'function' || typeof r.path !== 'string' || !r.path.startsWith('/')) {
        throw new ModuleLoadError(name, `invalid route ${JSON.stringify(r?.path)}`);
      }
    }
  }
  for (const key of ['init', 'dispose'] as const) {
    if (def[key] !== undefined && typeof def[key] !== 'function') throw new ModuleLoadError(name, `${key} is not a function`);
  }
  return def;
}
