/**
 * The one catalogue of wire error types (PROTOCOL.md section 4). The core's
 * types are fixed; the loaded modules' types are swapped in as one set when
 * a module set is activated (`useModuleErrorTypes`), so a failed reload
 * leaves none behind. The README table lists them all.
 */

/**
 * `status` is the HTTP status the HTTP gateway answers with for this type
 * (400 when not given), so the gateway needs no table of module error types.
 */
export type ErrorSpec = { readonly fatal: boolean; readonly info: string; readonly status?: number };

export type CatalogueEntry = ErrorSpec & { readonly origin: string };

const core = new Map<string, CatalogueEntry>();
let catalogue = new Map<string, CatalogueEntry>();

function define(origin: string, types: Record<string, ErrorSpec>): void {
  for (const [type, spec] of Object.entries(types)) core.set(type, { ...spec, origin });
  catalogue = new Map(core);
}

define('protocol', {
  unhandled: { fatal: false, info: 'internal server error', status: 500 },
  request_too_long: { fatal: true, info: 'frame exceeds the maximum request size', status: 413 },
  timeout: { fatal: true, info: 'timed out', status: 408 },
  command_not_found: { fatal: false, info: 'no such command', status: 404 },
  syntax: { fatal: false, info: 'malformed request' },
  name_too_short: { fatal: false, info: 'user names have at least 3 characters' },
  invalid_name: { fatal: false, info: 'user names are 3 to 32 characters from A-Z a-z 0-9 _ -' },
  wrong_user_or_password: { fatal: false, info: 'wrong user or password', status: 401 },
  not_logged_in: { fatal: false, info: 'log in first', status: 401 },
});

define('server', {
  name_taken: { fatal: false, info: 'that name is taken', status: 409 },
  password_too_short: { fatal: false, info: 'passwords have at least 8 characters' },
  user_not_found: { fatal: false, info: 'no such user', status: 404 },
  mailbox_full: { fatal: false, info: "the recipient's mailbox is full", status: 409 },
  too_many_attempts: { fatal: false, info: 'too many attempts; try again later', status: 429 },
  rate_limited: { fatal: false, info: 'too many requests or bytes from this user; slow down', status: 429 },
  slow_consumer: { fatal: true, info: 'the client does not read its frames fast enough', status: 503 },
  too_many_connections: { fatal: true, info: 'connection limit reached', status: 503 },
  shutdown: { fatal: true, info: 'the server is stopping', status: 503 },
  unavailable: { fatal: false, info: 'storage unavailable, try again', status: 503 },
  stream_reset: { fatal: false, info: 'the inbox cannot resume from there; read it again from the latest position', status: 409 },
});

/**
 * Adds a module's error types to a candidate set (not yet in force); a type
 * defined twice with another fatality is refused.
 */
export function addErrorTypes(into: Map<string, CatalogueEntry>, origin: string, types: Readonly<Record<string, ErrorSpec>>): void {
  for (const [type, spec] of Object.entries(types)) {
    const known = core.get(type) ?? into.get(type);
    if (known !== undefined && known.fatal !== spec.fatal) {
      throw new Error(`error type ${type} is already defined by ${known.origin} with another fatality`);
    }
    if (known === undefined) into.set(type, { ...spec, origin });
  }
}

/** Puts a module set's error types in force, replacing the previous set's. */
export function useModuleErrorTypes(types: ReadonlyMap<string, CatalogueEntry>): void {
  const next = new Map(core);
  for (const [type, entry] of types) if (!next.has(type)) next.set(type, entry);
  catalogue = next;
}

/** The HTTP status for an error type: its spec's, else 400 (a client error). */
export function httpStatus(type: string): number {
  return catalogue.get(type)?.status ?? 400;
}

export function errorCatalogue(): ReadonlyMap<string, CatalogueEntry> {
  return catalogue;
}

/**
 * An expected failure of a command: becomes `error,<fatality>,<type>,<info>`.
 * `prefix` carries wrapping fields (`req,<id>`) added on the way out.
 */
export class CommandError extends Error {
  readonly type: string;
  readonly fatal: boolean;
  readonly info: string;
  prefix: readonly string[] = [];

  constructor(type: string, info?: string, fatal?: boolean) {
    const spec = catalogue.get(type);
    const text = info ?? spec?.info ?? type;
    super(`${type}: ${text}`);
    this.name = 'CommandError';
    this.type = type;
    this.info = text;
    this.fatal = fatal ?? spec?.fatal ?? false;
  }

  /** The reply fields for the wire. */
  fields(): string[] {
    return [...this.prefix, 'error', this.fatal ? 'fatal' : 'nonfatal', this.type, this.info];
  }
}

/** Throws the catalogue's error of `type`. */
export function fail(type: string, info?: string): never {
  throw new CommandError(type, info);
}
