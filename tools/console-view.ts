/**
 * The pure parts of dumbconsole: prompt, colours, printing a push above the
 * line being typed without garbling it, completion.
 */
import { formatFields } from '../src/text/fields.ts';

export const BUILTIN_COMMANDS = ['login', 'nop', 'register', 'req', 'send', 'whoami'];
export const CONSOLE_COMMANDS = [':help', ':raw', ':req on', ':req off', ':quit'];

export type Style = { error(text: string): string; push(text: string): string; dim(text: string): string };

const ansi = (code: number) => (text: string) => `\x1b[${code}m${text}\x1b[0m`;
export const COLOR: Style = { error: ansi(31), push: ansi(36), dim: ansi(2) };
export const PLAIN: Style = { error: (t) => t, push: (t) => t, dim: (t) => t };

/** Colour when the terminal has it and NO_COLOR is unset (https://no-color.org). */
export function pickStyle(isTTY: boolean, env: Record<string, string | undefined>): Style {
  return isTTY && (env.NO_COLOR === undefined || env.NO_COLOR === '') && env.TERM !== 'dumb' ? COLOR : PLAIN;
}

export function promptFor(host: string, port: number, user: string | undefined, connected: boolean): string {
  const who = user === undefined ? '' : ` ${user}`;
  return connected ? `${host}:${port}${who}> ` : `${host}:${port} (disconnected)> `;
}

/** How an error tuple reads in the console: its type, then the info. */
export function describeError(fields: readonly string[], style: Style): string {
  const [, fatality, type = '?', ...info] = fields;
  const tag = fatality === 'fatal' ? `(fatal) ${type}` : type;
  return style.error(`error ${tag}${info.length > 0 ? `: ${info.join(',')}` : ''}`);
}

export function describeReply(fields: readonly string[], style: Style): string {
  if (fields[0] === 'error') return describeError(fields, style);
  if (fields[0] === 'req' && fields[2] === 'error') return `${style.dim(`req ${fields[1]}:`)} ${describeError(fields.slice(2), style)}`;
  return fields.length === 0 ? style.dim('(empty frame)') : formatFields(fields);
}

/**
 * Text that prints `message` on its own line above the prompt and then
 * redraws the prompt with what the user had typed so far.
 */
export function printAbove(message: string, prompt: string, typed: string): string {
  return `\r\x1b[2K${message}\n${prompt}${typed}`;
}

/** readline completer: command names (from the server or built in) and console commands. */
export function complete(line: string, commands: readonly string[]): [string[], string] {
  if (line.includes(',')) return [[], line];
  const pool = line.startsWith(':') ? CONSOLE_COMMANDS : commands;
  const hits = pool.filter((c) => c.startsWith(line));
  return [hits.length > 0 ? hits : [], line];
}

export const HELP = [
  'Type requests in comma syntax, e.g. register,alice,secret123 or send,bob,msg,hello.',
  'Escape a comma inside a field as \\, and a backslash as \\\\.',
  ':raw        toggle showing frames in hex',
  ':req on     wrap every request in req,<id>; :req off to stop',
  ':help       this help',
  ':quit       leave (or Ctrl-D)',
].join('\n');
