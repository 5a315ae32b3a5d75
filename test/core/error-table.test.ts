/**
 * The README's error table and the error catalogue (the core's types plus
 * every shipped module's `errors`) list the same types with the same
 * fatality, so neither can drift from the other.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { errorCatalogue } from '../../src/core/errors.ts';
import { loadModules } from '../../src/core/module-loader.ts';
import { ROOT } from '../helpers/server.ts';

type Row = { fatal: boolean; when: string };

/** `| \`type\` | yes/no ... | when |` rows of the table under "### Errors". */
function readmeTable(): Map<string, Row> {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('\n### Errors\n'));
  const table = section.slice(section.indexOf('\n| type | fatal | when |'));
  const rows = new Map<string, Row>();
  for (const line of table.split('\n').slice(3)) {
    if (!line.startsWith('|')) break;
    const [, type, fatal, when] = line.split('|').map((cell) => cell.trim());
    const name = /^`([a-z_]+)`$/.exec(type ?? '')?.[1];
    expect(name, `a row of the README's error table: ${line}`).toBeDefined();
    expect(fatal, `the fatal column of ${name}`).toMatch(/^(yes|no)\b/); // `no (yes when ...)`: the catalogue's is the first word
    expect(rows.has(name!), `${name} twice in the README`).toBe(false);
    rows.set(name!, { fatal: fatal!.startsWith('yes'), when: when ?? '' });
  }
  return rows;
}

/** The core's types and the shipped modules' own, with the module that declares each. */
async function catalogue(): Promise<Map<string, { fatal: boolean; origin: string }>> {
  const all = new Map<string, { fatal: boolean; origin: string }>();
  for (const [type, entry] of errorCatalogue()) all.set(type, { fatal: entry.fatal, origin: entry.origin });
  for (const m of await loadModules(join(ROOT, 'modules.txt'), join(ROOT, 'modules'), 2000)) {
    for (const [type, spec] of Object.entries(m.def.errors ?? {})) {
      expect(all.get(type)?.fatal ?? spec.fatal, `${type} of ${m.name} and its earlier definition`).toBe(spec.fatal);
      if (!all.has(type)) all.set(type, { fatal: spec.fatal, origin: m.name });
    }
  }
  return all;
}

describe("the README's error table", () => {
  it('lists every type of the catalogue and of the shipped modules, with the same fatality, and no other', async () => {
    const readme = readmeTable();
    const types = await catalogue();
    expect(readme.size).toBeGreaterThan(10); // the table was found
    expect(
      [...types.keys()].filter((t) => !readme.has(t)),
      'types missing from the README',
    ).toEqual([]);
    expect(
      [...readme.keys()].filter((t) => !types.has(t)),
      'README rows no code defines',
    ).toEqual([]);
    for (const [type, { fatal }] of types) expect(readme.get(type)?.fatal, `fatality of ${type}`).toBe(fatal);
  });

  it("names a module's own types after the module", async () => {
    const readme = readmeTable();
    for (const [type, { origin }] of await catalogue()) {
      if (origin === 'protocol' || origin === 'server') continue;
      expect(readme.get(type)?.when, `the row of ${type}`).toMatch(new RegExp(`^\\((\\w+, )*${origin}(, \\w+)*\\)`));
    }
  });
});
