/**
 * The loaded modules, loaded and put in force in one step. A load builds a
 * complete candidate (option values, error types, set-up modules, services,
 * routes) beside the set in force and swaps it in only when every module
 * loaded; a failure leaves the running set, its options, its error types
 * and its routes exactly as they were.
 */
import type { Logger } from 'pino';
import { addErrorTypes, useModuleErrorTypes, type CatalogueEntry } from './errors.ts';
import { loadModules, ModuleLoadError, validateRuntime, type ImportedModule } from './module-loader.ts';
import type { ModuleContext, ModuleHooks, ModuleRuntime, ServerApi } from './module-api.ts';
import { buildRoutes, type Router } from './router.ts';
import { ConfigError, resolveModuleOption, type ServerOptions } from '../config.ts';
import type { Store } from '../store/store.ts';

/** A module in force: its definition and what its setup returned, merged. */
export type LoadedModule = ImportedModule & {
  readonly runtime: Required<Pick<ModuleRuntime, 'commands' | 'filters' | 'hooks' | 'routes' | 'services'>> & Pick<ModuleRuntime, 'dispose'>;
};

type ActiveSet = {
  readonly modules: readonly LoadedModule[];
  readonly values: Readonly<Record<string, unknown>>;
  readonly services: ReadonlyMap<string, object>;
};

/**
 * Readies something that must change together with the set (the HTTP
 * gateway's routes) for a candidate, before it is put in force: `commit`
 * switches to it in the same step as the set, `abort` drops it when the
 * candidate is not used. Throwing fails the load, keeping the set in force.
 */
export type Preparer = (modules: readonly LoadedModule[]) => Promise<{ commit(): void; abort(): void }>;

export type ModuleSetDeps = {
  readonly options: ServerOptions;
  readonly store: Store;
  readonly log: Logger;
  readonly router: Router;
  /** The API handed to modules (built after the set, hence a getter). */
  readonly api: () => ServerApi;
};

export class ModuleSet {
  static #count = 0;
  /** Module instances belong to one set (see loadModules). */
  readonly #owner = ++ModuleSet.#count;
  readonly #deps: ModuleSetDeps;
  #active: ActiveSet;
  /** Services provided through `server.services.provide` while a candidate is being set up. */
  #providing: Map<string, object> | undefined;
  readonly #listeners: (() => void)[] = [];
  readonly #preparers: Preparer[] = [];
  /** The load running now: loads (start, each SIGHUP) run one after another, never interleaved. */
  #loading: Promise<void> = Promise.resolve();

  constructor(deps: ModuleSetDeps) {
    this.#deps = deps;
    this.#active = { modules: [], values: { ...deps.options.values }, services: new Map() };
  }

  get modules(): readonly LoadedModule[] {
    return this.#active.modules;
  }

  /** Every option value by flag name, the core's and the loaded modules'. */
  get values(): Readonly<Record<string, unknown>> {
    return this.#active.values;
  }

  service<T extends object>(name: string): T | undefined {
    return this.#active.services.get(name) as T | undefined;
  }

  /** `server.services.provide` from an older-style module's `init`. */
  provide(name: string, service: object): void {
    if (this.#providing === undefined) throw new Error('services are provided while modules load (in init or setup)');
    this.#providing.set(name, service);
  }

  /** Called after every successful (re)load: the HTTP gateway rebuilds its routes. */
  onLoaded(listener: () => void): void {
    this.#listeners.push(listener);
  }

  /** See Preparer: the HTTP gateway builds a candidate's routes before the candidate is put in force. */
  onPrepare(preparer: Preparer): void {
    this.#preparers.push(preparer);
  }

  /** Flags declared by the loaded modules. */
  flags(): Set<string> {
    return new Set(this.#active.modules.flatMap((m) => Object.keys(m.def.options ?? {})));
  }

  /**
   * Loads `modules.txt` and puts it in force; throws (naming the module) and
   * keeps the old set on failure. A load asked for while one runs starts
   * when that one is done (two quick SIGHUPs would otherwise set up the same
   * modules twice, at once, and share the services being provided).
   */
  load(): Promise<void> {
    const run = this.#loading.then(() => this.#load());
    this.#loading = run.catch(() => undefined);
    return run;
  }

  async #load(): Promise<void> {
    const { options, router } = this.#deps;
    const imported = await loadModules(options.modulesList, options.modulesDir, this.#owner);
    const values = this.#resolveOptions(imported);
    const errorTypes = errorTypesOf(imported);
    await this.#migrate(imported);
    const { modules, services } = await this.#setUp(imported, values);
    let routes;
    try {
      checkCommands(modules);
      checkRequirements(modules, services);
      routes = buildRoutes(modules.map((m) => m.runtime));
    } catch (err) {
      this.#dispose(modules, this.#active.modules);
      throw err;
    }
    const prepared = await this.#prepare(modules);
    const old = this.#active;
    this.#active = { modules, values, services };
    router.use(routes);
    useModuleErrorTypes(errorTypes);
    for (const p of prepared) p.commit();
    this.#dispose(old.modules, modules);
    for (const listener of this.#listeners) listener();
  }

  /** Runs every preparer for the candidate; on a failure drops what the others prepared and the candidate's new modules. */
  async #prepare(modules: LoadedModule[]): Promise<{ commit(): void; abort(): void }[]> {
    const results = await Promise.allSettled(this.#preparers.map((p) => p(modules)));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed === undefined) return results.map((r) => (r as PromiseFulfilledResult<{ commit(): void; abort(): void }>).value);
    for (const r of results) if (r.status === 'fulfilled') r.value.abort();
    this.#dispose(modules, this.#active.modules);
    throw new Error(`the modules' HTTP routes cannot be mounted: ${(failed.reason as Error).message}`);
  }

  /** Runs a hook of every loaded module; one module's failure does not stop the others. */
  emit<K extends keyof ModuleHooks>(hook: K, ...args: Parameters<NonNullable<ModuleHooks[K]>>): void {
    for (const m of this.#active.modules) {
      const fn = m.runtime.hooks[hook] as ((...a: unknown[]) => unknown) | undefined;
      if (fn === undefined) continue;
      try {
        const result = fn(...args);
        // hooks are not awaited; an async one that rejects is logged, not left unhandled
        if (result instanceof Promise) result.catch((err: unknown) => this.#deps.log.error({ err, module: m.name, hook }, 'module hook failed'));
      } catch (err) {
        this.#deps.log.error({ err, module: m.name, hook }, 'module hook failed');
      }
    }
  }

  dispose(): void {
    this.#dispose(this.#active.modules, []);
  }

  #resolveOptions(imported: readonly ImportedModule[]): Record<string, unknown> {
    const values: Record<string, unknown> = { ...this.#deps.options.values };
    for (const m of imported) {
      for (const [flag, spec] of Object.entries(m.def.options ?? {})) {
        try {
          values[flag] = resolveModuleOption(this.#deps.options.raw, flag, spec);
        } catch (err) {
          if (err instanceof ConfigError) throw new ModuleLoadError(m.name, err.message, true);
          throw err;
        }
      }
    }
    return values;
  }

  async #migrate(imported: readonly ImportedModule[]): Promise<void> {
    for (const m of imported) {
      try {
        await this.#deps.store.migrate(`module:${m.name}`, m.def.migrations ?? []);
      } catch (err) {
        throw new ModuleLoadError(m.name, `migration failed: ${(err as Error).message}`);
      }
    }
  }

  /**
   * Sets up every module of the candidate. A module whose file did not change
   * since the set in force is the same instance: it keeps its running setup.
   */
  async #setUp(imported: readonly ImportedModule[], values: Record<string, unknown>): Promise<{ modules: LoadedModule[]; services: Map<string, object> }> {
    const services = new Map<string, object>();
    const modules: LoadedModule[] = [];
    for (const m of imported) {
      const running = this.#active.modules.find((a) => a.def === m.def);
      if (running !== undefined) {
        modules.push(running);
        continue;
      }
      this.#providing = new Map();
      try {
        modules.push(await this.#setUpOne(m, values, this.#providing));
      } catch (err) {
        this.#dispose(modules, this.#active.modules);
        throw err instanceof ModuleLoadError ? err : new ModuleLoadError(m.name, `setup failed: ${(err as Error).message}`);
      } finally {
        this.#providing = undefined;
      }
    }
    for (const m of modules) for (const [name, service] of Object.entries(m.runtime.services)) services.set(name, service);
    return { modules, services };
  }

  async #setUpOne(m: ImportedModule, values: Record<string, unknown>, provided: Map<string, object>): Promise<LoadedModule> {
    const api = this.#deps.api();
    const own: Record<string, unknown> = {};
    for (const flag of Object.keys(m.def.options ?? {})) own[flag] = values[flag];
    const ctx: ModuleContext = { server: api, options: own as ModuleContext['options'], log: this.#deps.log.child({ module: m.name }) };
    let returned: ModuleRuntime | void | undefined;
    try {
      await m.def.init?.(api);
      returned = (await m.def.setup?.(ctx)) ?? undefined;
      validateRuntime(m.name, returned);
    } catch (err) {
      // what init or setup started (timers, connections) is released: the module never comes into force
      this.#disposeHalf(m, returned);
      throw err;
    }
    const r: ModuleRuntime = returned ?? {};
    const d = m.def;
    return {
      ...m,
      runtime: {
        commands: { ...d.commands, ...r.commands },
        filters: { ...d.filters, ...r.filters },
        hooks: { ...d.hooks, ...r.hooks },
        routes: [...(d.routes ?? []), ...(r.routes ?? [])],
        services: { ...Object.fromEntries(provided), ...d.services, ...r.services },
        dispose:
          d.dispose === undefined && r.dispose === undefined
            ? undefined
            : () => {
                r.dispose?.();
                d.dispose?.();
              },
      },
    };
  }

  /** A module whose init or setup failed: its own dispose, and that of whatever setup returned. */
  #disposeHalf(m: ImportedModule, returned: unknown): void {
    const fns = [(returned as ModuleRuntime | undefined)?.dispose, m.def.dispose];
    for (const fn of fns) {
      if (typeof fn !== 'function') continue;
      try {
        fn();
      } catch (err) {
        this.#deps.log.warn({ err, module: m.name }, 'module dispose failed');
      }
    }
  }

  /** Disposes the modules of `list` that are not also in `keep` (unchanged modules carry over). */
  #dispose(list: readonly LoadedModule[], keep: readonly LoadedModule[]): void {
    for (const m of list) {
      if (keep.includes(m)) continue;
      try {
        m.runtime.dispose?.();
      } catch (err) {
        // A module's cleanup failing must not stop the others'.
        this.#deps.log.warn({ err, module: m.name }, 'module dispose failed');
      }
    }
  }
}

function errorTypesOf(imported: readonly ImportedModule[]): Map<string, CatalogueEntry> {
  const types = new Map<string, CatalogueEntry>();
  for (const m of imported) {
    try {
      addErrorTypes(types, m.name, m.def.errors ?? {});
    } catch (err) {
      throw new ModuleLoadError(m.name, (err as Error).message);
    }
  }
  return types;
}

function checkCommands(modules: readonly LoadedModule[]): void {
  const owners = new Map<string, string>();
  for (const m of modules) {
    for (const command of Object.keys(m.runtime.commands)) {
      const owner = owners.get(command);
      if (owner !== undefined) throw new ModuleLoadError(m.name, `command ${command} is already defined by module ${owner}`);
      owners.set(command, m.name);
    }
  }
}

function checkRequirements(modules: readonly LoadedModule[], services: ReadonlyMap<string, object>): void {
  for (const m of modules) {
    for (const name of m.def.requires ?? []) {
      if (!services.has(name)) {
        throw new ModuleLoadError(m.name, `${m.file} requires the service ${JSON.stringify(name)}, which no loaded module provides`);
      }
    }
  }
}
