/**
 * PROTOCOL.md section 2: comma-separated fields, backslash escapes.
 * `\,` is a comma inside a field, `\\` a backslash, `\x` stands for `x`;
 * a lone backslash at the end of the payload is a syntax error.
 */

export type FieldsFault = { readonly fault: 'syntax'; readonly info: string };

const TRAILING_BACKSLASH: FieldsFault = Object.freeze({
  fault: 'syntax',
  info: 'a backslash at the end of the payload escapes nothing',
});

/** Splits a payload into fields. Never throws: a fault comes back as a value. */
export function parseFields(payload: string): string[] | FieldsFault {
  // Fast path: most payloads carry no escapes at all.
  if (payload.indexOf('\\') === -1) return payload.indexOf(',') === -1 ? [payload] : payload.split(',');
  const fields: string[] = [];
  let current = '';
  let runStart = 0;
  for (let i = 0; i < payload.length; i++) {
    const c = payload.charCodeAt(i);
    if (c === 0x5c /* \ */) {
      if (i + 1 >= payload.length) return TRAILING_BACKSLASH;
      current += payload.slice(runStart, i) + payload[i + 1];
      i++;
      runStart = i + 1;
    } else if (c === 0x2c /* , */) {
      fields.push(current + payload.slice(runStart, i));
      current = '';
      runStart = i + 1;
    }
  }
  fields.push(current + payload.slice(runStart));
  return fields;
}

export function isFieldsFault(value: string[] | FieldsFault): value is FieldsFault {
  return !Array.isArray(value);
}

const ESCAPE_ALL = /[\\,]/g;

export function escapeField(field: string): string {
  return field.indexOf(',') === -1 && field.indexOf('\\') === -1 ? field : field.replace(ESCAPE_ALL, '\\$&');
}

/** Joins fields into a payload, escaping only `\` and `,`. */
export function formatFields(fields: readonly string[]): string {
  let out = '';
  for (let i = 0; i < fields.length; i++) {
    if (i > 0) out += ',';
    out += escapeField(fields[i]!);
  }
  return out;
}
