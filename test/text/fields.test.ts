import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { formatFields, isFieldsFault, parseFields } from '../../src/text/fields.ts';

describe('parseFields', () => {
  it.each([
    ['login,alice,secret', ['login', 'alice', 'secret']],
    ['send ,bob', ['send ', 'bob']],
    ['send,bob,,x', ['send', 'bob', '', 'x']],
    ['a\\,b,c', ['a,b', 'c']],
    ['a\\\\,b', ['a\\', 'b']],
    ['\\x\\y', ['xy']],
    ['nop', ['nop']],
    [',', ['', '']],
    ['a\\,', ['a,']],
    ['é,ü', ['é', 'ü']],
  ])('parses %j', (payload, fields) => {
    expect(parseFields(payload)).toEqual(fields);
  });

  it('reports a trailing backslash as a syntax fault', () => {
    const r = parseFields('send,bob,x\\');
    expect(isFieldsFault(r)).toBe(true);
    expect(r).toMatchObject({ fault: 'syntax' });
  });

  it('treats an escaped trailing backslash as data', () => {
    expect(parseFields('x\\\\')).toEqual(['x\\']);
  });
});

describe('formatFields', () => {
  it('escapes only backslash and comma', () => {
    expect(formatFields(['send', 'a,b', 'c\\d', 'e f\n'])).toBe('send,a\\,b,c\\\\d,e f\n');
    expect(formatFields([])).toBe('');
  });

  it('property: format then parse gives back the same fields', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ unit: fc.constantFrom('a', ',', '\\', ' ', 'é', 'x', '😀') }), { minLength: 1, maxLength: 10 }), (fields) => {
        expect(parseFields(formatFields(fields))).toEqual(fields);
      }),
    );
    fc.assert(
      fc.property(fc.array(fc.string({ unit: 'grapheme' }), { minLength: 1, maxLength: 10 }), (fields) => {
        expect(parseFields(formatFields(fields))).toEqual(fields);
      }),
    );
  });

  it('property: parsing never throws on any string', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom('a', ',', '\\', 'b') }), (s) => {
        const r = parseFields(s);
        if (isFieldsFault(r)) expect(s.endsWith('\\')).toBe(true);
        else expect(r.length).toBeGreaterThanOrEqual(1);
      }),
    );
  });
});
