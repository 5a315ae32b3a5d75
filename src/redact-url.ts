/**
 * A database or Redis URL fit for a log line or an error message: its
 * password, in the user part or as a `password=` (or `sslpassword=`) query
 * parameter as node-postgres also reads it, replaced by `***`. Works on text
 * that is not a valid URL too (a mistyped flag is echoed back to the operator).
 */
const SECRET_PARAMS = /([?&](?:ssl)?password=)[^&#]*/gi;

export function redactUrl(url: string): string {
  // the user part, scheme://user:password@, up to the last @ before the query: a password typed
  // without percent-encoding (p@ss/word) is hidden whole
  return url.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#:@]*):[^?#]*@/, '$1:***@').replace(SECRET_PARAMS, '$1***');
}
