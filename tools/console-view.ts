/**
 * The pure parts of dumbconsole: prompt, colours, printing a push above the
 * line being typed without garbling it, completion.
 */
import { formatFields } from '../src/text/fields.ts';
import { parseHistory } from '../modules/rooms-history.ts';
import { requestSyntax } from './console-hints.ts';

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

/** `2026-11-22 14:03:05` in the console's local time zone. */
export function localTime(ms: number): string {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return String(ms);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** A `history` reply (the rooms module's) as one line per message, with local times. */
export function describeHistory(fields: readonly string[], style: Style): string {
  const messages = parseHistory(fields);
  const head = style.dim(`history of ${fields[1] ?? '?'}: ${messages.length} message${messages.length === 1 ? '' : 's'}`);
  return [head, ...messages.map((m) => `  ${style.dim(`#${m.id} ${localTime(m.time)}`)} ${m.user}: ${m.text}`)].join('\n');
}

/** A `help,<command>[,<usage>]` reply: the request and, when declared, the reply. */
export function describeUsage(fields: readonly string[], style: Style): string {
  const [, command = '?', usage] = fields;
  if (usage === undefined) return style.dim(`${command}: no usage declared`);
  const request = requestSyntax(usage);
  const reply = usage.length > request.length ? usage.slice(usage.indexOf(' -> ') + 4).trim() : '';
  return `usage: ${request}${reply === '' ? '' : `\n${style.dim(`reply: ${reply}`)}`}`;
}

/** What to do about a stream_reset, said after its info. */
export const STREAM_RESET_HINT = 'your inbox position is gone: resume,,latest for new entries, or resume,,0 for all kept ones';

/** `resumed,<epoch>,<head>`: where the stream stands; the entries after the position asked for follow. */
export function describeResumed(fields: readonly string[], style: Style): string {
  const [, epoch = '?', head = '?'] = fields;
  return style.dim(`resumed: epoch ${epoch}, head #${head}`);
}

/**
 * An inbox entry (`inbox,<seq>,<fields...>`) as a line: `#12 alice → you: hello`
 * for a message, `#13 you → bob: hi` for a carbon (sent from any of your
 * devices), `#14 friend,added,bob` for anything else.
 */
export function describeInbox(fields: readonly string[], style: Style): string {
  const [, seq = '?', kind, peer, command, ...args] = fields;
  const tag = style.dim(`#${seq}`);
  if ((kind === 'send' || kind === 'sent') && peer !== undefined && command !== undefined) {
    // msg is the browser client's command for text; anything else shows its name
    const text = command === 'msg' ? args.join(', ') : [command, ...args].join(', ');
    const route = kind === 'send' ? `${peer} → you` : `you → ${peer}`;
    return `${tag} ${style.push(`${route}: ${text}`)}`;
  }
  return `${tag} ${style.push(formatFields(fields.slice(2)))}`;
}

/** A reply to the user's own request, as the console prints it. */
export function describeReply(fields: readonly string[], style: Style): string {
  if (fields[0] === 'error') {
    const line = describeError(fields, style);
    return fields[2] === 'stream_reset' ? `${line}\n${style.dim(STREAM_RESET_HINT)}` : line;
  }
  if (fields[0] === 'req' && ['error', 'history', 'help', 'resumed'].includes(fields[2] ?? '')) {
    return `${style.dim(`req ${fields[1]}:`)} ${describeReply(fields.slice(2), style)}`;
  }
  if (fields[0] === 'resumed' && fields.length === 3) return describeResumed(fields, style);
  if (fields[0] === 'history' && /^\d+$/.test(fields[2] ?? '')) return describeHistory(fields, style);
  if (fields[0] === 'help' && fields.length <= 3) return describeUsage(fields, style);
  return fields.length === 0 ? style.dim('(empty frame)') : formatFields(fields);
}

/** A push: as on the wire, in the push colour; an inbox entry as a readable line. */
export function describePush(fields: readonly string[], style: Style): string {
  if (fields[0] === 'inbox' && fields.length >= 3) return describeInbox(fields, style);
  return style.push(fields.length === 0 ? '(empty frame)' : formatFields(fields));
}

/**
 * Text that prints `message` on its own line above the prompt and then
 * redraws the prompt with what the user had typed so far.
 */
export function printAbove(message: string, prompt: string, typed: string): string {
  return `\r\x1b[2K${message}\n${prompt}${typed}`;
}

/** readline completer: command names (from the server or built in), after `help ` too, and console commands. */
export function complete(line: string, commands: readonly string[]): [string[], string] {
  if (line.includes(',')) return [[], line];
  const help = /^help\s+(\S*)$/.exec(line);
  if (help !== null) return [commands.filter((c) => c.startsWith(help[1]!)).map((c) => `help ${c}`), line];
  const pool = line.startsWith(':') ? CONSOLE_COMMANDS : commands;
  const hits = pool.filter((c) => c.startsWith(line));
  return [hits.length > 0 ? hits : [], line];
}

export const HELP = [
  'Type requests in comma syntax, e.g. register,alice,secret123 or send,bob,msg,hello.',
  'Escape a comma inside a field as \\, and a backslash as \\\\. Tab completes command names;',
  'the arguments still to come show dimmed as you type.',
  'help <command>  its usage, from the server (help,<command> on the wire)',
  ':raw            toggle showing frames in hex',
  ':req on         wrap every request in req,<id>; :req off to stop',
  ':help, help     this help',
  ':quit           leave (or Ctrl-D, Ctrl-C)',
].join('\n');
