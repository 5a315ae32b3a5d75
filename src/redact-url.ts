/**
 * A database or Redis URL fit for a log line or an error message: its
 * password, in the user part or as a `password=` (or `sslpassword=`) query
 * parameter as node-postgres also reads it, replaced by `***`. Works on text
 * that is not a valid URL too (a mistyped flag is echoed back to the operator).
 */
const SECRET_PARAMS = /([?&](?:ssl)?password=)[^&#]*/gi;

const USER_PASSWORD = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#:@]*):[^?#]*@/;
/** A password typed with `#` or `?` unencoded: up to the last @ of all (hiding a host too is the safe mistake). */
const USER_PASSWORD_UNENCODED = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#:@]*):.*@/;

export function redactUrl(url: string): string {
  // the user part, scheme://user:password@, up to the last @ before the query: a password typed
  // without percent-encoding (p@ss/word) is hidden whole
  const user = USER_PASSWORD.test(url) ? USER_PASSWORD : USER_PASSWORD_UNENCODED;
  return url.replace(user, '$1:***@').replace(SECRET_PARAMS, '$1***');
}
