/**
 * Command name -> the handler of a loaded module, with the filters other
 * modules put in front of it. The module set hands the router a complete
 * table on every (re)load; a request sees either the old table or the new.
 */
import type { Logger } from 'pino';
import { CommandError } from './errors.ts';
import type { CommandContext, Filter, Handler, Reply } from './module-api.ts';

export type Route = { readonly handler: Handler; readonly filters: readonly Filter[] };
export type Routes = ReadonlyMap<string, Route>;

/** What a module contributes to the routing table. */
export type RouteSource = {
  readonly commands: Readonly<Record<string, Handler>>;
  readonly filters: Readonly<Record<string, Filter>>;
};

export class Router {
  readonly #log: Logger;
  readonly #storeFailed: (err: unknown) => boolean;
  #routes: Routes = new Map();

  /** `storeFailed` tells a failing store (answered `unavailable`) from a fault in the server. */
  constructor(log: Logger, storeFailed: (err: unknown) => boolean = () => false) {
    this.#log = log;
    this.#storeFailed = storeFailed;
  }

  use(routes: Routes): void {
    this.#routes = routes;
  }

  /** Routes one request: `fields[0]` names the command. Throws CommandError. */
  invoke(ctx: CommandContext, fields: readonly string[]): Reply | Promise<Reply> {
    const name = fields[0]!;
    const route = this.#routes.get(name);
    if (route === undefined) {
      throw new CommandError('command_not_found', `no command ${JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}...` : name)}`);
    }
    const args = fields.slice(1);
    const filters = route.filters;
    for (let i = 0; i < filters.length; i++) {
      const pending = filters[i]!(ctx, args);
      if (pending instanceof Promise) return this.#afterFilters(pending, i + 1, route, ctx, args);
    }
    return route.handler(ctx, args);
  }

  /** The rest of a route once a filter went asynchronous (a look-up in the store). */
  async #afterFilters(pending: Promise<void>, next: number, route: Route, ctx: CommandContext, args: string[]): Promise<Reply> {
    await pending;
    for (let i = next; i < route.filters.length; i++) await route.filters[i]!(ctx, args);
    return route.handler(ctx, args);
  }

  /** Expected failures pass through; anything else is logged with its stack and becomes `unhandled`. */
  toCommandError(err: unknown, session?: { id: number }): CommandError {
    if (err instanceof CommandError) return err;
    if (this.#storeFailed(err)) return new CommandError('unavailable');
    this.#log.error({ err, session: session?.id }, 'unhandled error in a command');
    return new CommandError('unhandled');
  }

  has(name: string): boolean {
    return this.#routes.has(name);
  }

  /** Command names now routed, sorted. */
  commands(): string[] {
    return [...this.#routes.keys()].sort();
  }
}

/** Every command with the filters that other modules (or its own) put in front of it. */
export function buildRoutes(sources: readonly RouteSource[]): Map<string, Route> {
  const filters = new Map<string, Filter[]>();
  for (const source of sources) {
    for (const [command, filter] of Object.entries(source.filters)) {
      const list = filters.get(command) ?? [];
      list.push(filter);
      filters.set(command, list);
    }
  }
  const routes = new Map<string, Route>();
  for (const source of sources) {
    for (const [command, handler] of Object.entries(source.commands)) {
      routes.set(command, { handler, filters: filters.get(command) ?? [] });
    }
  }
  return routes;
}
