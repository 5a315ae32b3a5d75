/**
 * The one catalogue of wire error types (PROTOCOL.md section 4). Modules add
 * their own types with `registerErrorType`; the README table lists them all.
 */

export type ErrorSpec = { readonly fatal: boolean; readonly info: string };

const catalogue = new Map<string, ErrorSpec & { readonly origin: string }>();

function define(origin: string, types: Record<string, ErrorSpec>): void {
  for (const [type, spec] of Object.entries(types)) catalogue.set(type, { ...spec, origin });
}

define('protocol', {
  unhandled: { fatal: false, info: 'internal server error' },
  request_too_long: { fatal: true, info: 'frame exceeds the maximum request size' },
  timeout: { fatal: true, info: 'timed out' },
  command_not_found: { fatal: false, info: 'no such command' },
  syntax: { fatal: false, info: 'malformed request' },
  name_too_short: { fatal: false, info: 'user names have at least 3 characters' },
  invalid_name: { fatal: false, info: 'user names are 3 to 32 characters from A-Z a-z 0-9 _ -' },
  wrong_user_or_password: { fatal: false, info: 'wrong user or password' },
  not_logged_in: { fatal: false, info: 'log in first' },
});

define('server', {
  name_taken: { fatal: false, info: 'that name is taken' },
  password_too_short: { fatal: false, info: 'passwords have at least 8 characters' },
  user_not_found: { fatal: false, info: 'no such user' },
  mailbox_full: { fatal: false, info: "the recipient's mailbox is full" },
  too_many_attempts: { fatal: false, info: 'too many attempts; try again later' },
  rate_limited: { fatal: false, info: 'too many requests or bytes from this user; slow down' },
  slow_consumer: { fatal: true, info: 'the client does not read its frames fast enough' },
  too_many_connections: { fatal: true, info: 'connection limit reached' },
  shutdown: { fatal: true, info: 'the server is stopping' },
});

/** Lets a module add error types; a type defined twice with another fatality is refused. */
export function registerErrorType(origin: string, type: string, spec: ErrorSpec): void {
  const known = catalogue.get(type);
  if (known !== undefined && known.fatal !== spec.fatal) {
    throw new Error(`error type ${type} is already defined by ${known.origin} with another fatality`);
  }
  if (known === undefined) catalogue.set(type, { ...spec, origin });
}

export function errorCatalogue(): ReadonlyMap<string, ErrorSpec & { readonly origin: string }> {
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
