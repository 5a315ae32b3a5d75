/**
 * Argument hints for dumbconsole, redis-cli style: while a command is typed,
 * the arguments still to come show dimmed after the cursor. They come from
 * the usages the server's modules declare (`help,<command>`). Pure.
 */

/** The request part of a usage: what comes before ` -> `. */
export function requestSyntax(usage: string): string {
  const arrow = usage.indexOf(' -> ');
  return (arrow < 0 ? usage : usage.slice(0, arrow)).trim();
}

/** Fields of a typed line, split at unescaped commas (escapes kept; the last may be partial). */
export function typedFields(line: string): string[] {
  const fields: string[] = [];
  let start = 0;
  for (let i = 0; i < line.length; i++) {
    if (line[i] === '\\') i++;
    else if (line[i] === ',') {
      fields.push(line.slice(start, i));
      start = i + 1;
    }
  }
  fields.push(line.slice(start));
  return fields;
}

/** A syntax's tokens, split at commas outside `[...]`: `send,<user>,<command>[,args...]` has three. */
function tokens(syntax: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < syntax.length; i++) {
    const c = syntax[i];
    if (c === '[') depth++;
    else if (c === ']') depth--;
    else if (c === ',' && depth === 0) {
      out.push(syntax.slice(start, i));
      start = i + 1;
    }
  }
  out.push(syntax.slice(start));
  return out;
}

/**
 * Every full form of a syntax. `history,<room>,last,<n> | since,<time>`:
 * an alternative that does not start with the command replaces the first
 * form's tail from its first word that is not a placeholder.
 */
export function forms(syntax: string): string[][] {
  const [first = '', ...alternatives] = syntax.split(' | ').map((s) => s.trim());
  const base = tokens(first);
  const out = [base];
  const branch = base.findIndex((t, i) => i > 0 && !isPlaceholder(t));
  for (const alternative of alternatives) {
    const t = tokens(alternative);
    if (t[0] === base[0] || branch < 0) out.push(t);
    else out.push([...base.slice(0, branch), ...t]);
  }
  return out;
}

function isPlaceholder(token: string): boolean {
  return token.startsWith('<') || token.startsWith('[');
}

/** Whether a typed field fits a token: placeholders take anything, words (`start|stop`) must match. */
function fits(token: string, typed: string, partial: boolean): boolean {
  if (isPlaceholder(token)) return true;
  return token.split('|').some((word) => (partial ? word.startsWith(typed) : word === typed));
}

/**
 * What to show after the cursor for a typed line, given each command's
 * usage: the arguments still to come (`<room>,<text>` after `say,`), or ''.
 * `req,<id>,` lines are hinted by the command they wrap.
 */
export function hintFor(line: string, usages: ReadonlyMap<string, string>): string {
  if (line === '' || line.startsWith(':') || /\s/.test(line[0]!)) return '';
  const typed = typedFields(line);
  if (typed[0] === 'req' && typed.length >= 3 && usages.has(typed[2]!)) return hintFor(typed.slice(2).join(','), usages);
  const usage = usages.get(typed[0]!);
  if (usage === undefined) return '';
  const current = typed.length - 1;
  const candidates = forms(requestSyntax(usage)).filter((form) => {
    if (form.length <= current) return false; // past the last argument (or into a variadic tail): nothing to hint
    for (let i = 1; i < current; i++) if (!fits(form[i]!, typed[i]!, false)) return false;
    return current === 0 || fits(form[current]!, typed[current]!, true);
  });
  if (candidates.length === 0) return '';
  const from = typed[current] === '' ? current : current + 1;
  const rest: string[] = [];
  for (let i = from; ; i++) {
    const here = [...new Set(candidates.map((f) => f[i]).filter((t): t is string => t !== undefined))];
    if (here.length === 0) break;
    rest.push(here.join('|'));
    if (here.length > 1 || candidates.some((f) => f[i] === undefined)) break; // the forms part here
  }
  if (rest.length === 0) return '';
  return (from === current ? '' : ',') + rest.join(',');
}
