#!/usr/bin/env node
/**
 * dumbconsole: an interactive console in the spirit of redis-cli. Line
 * editing, history in ~/.textserver_history, tab completion, argument hints
 * and `help <command>` from the usages modules declare, pushes printed as
 * they arrive (inbox entries as `#12 alice → you: hello`), reconnects
 * (logging in again, and resuming the inbox from the last entry shown).
 * Without a terminal on stdin it runs like dumbclient reading stdin.
 */
import { createInterface, type Interface } from 'node:readline';
import { appendFileSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { ReplyError, TextClient } from '../src/client/client.ts';
import { AUTO_ID } from '../src/client/protocol.ts';
import { isFieldsFault, parseFields } from '../src/text/fields.ts';
import { connectFromFlags, errorFields, flagsOrUsage, hexLine, type ToolFlags } from './cli-common.ts';
import { runScript, stdinLines } from './dumbclient.ts';
import { BUILTIN_COMMANDS, HELP, PLAIN, complete, describePush, describeReply, pickStyle, printAbove, promptFor } from './console-view.ts';
import { hintFor } from './console-hints.ts';

const USAGE = 'usage: dumbconsole [--host H] [--port P] [--tls [--insecure]]';
const HISTORY_FILE = join(homedir(), '.textserver_history');
const HISTORY_SIZE = 1000;
/** Lines that carry a password or token never reach the history file. */
const SECRET_LINE = /^(req,[^,]*,)?(login|register|token),/;

export type ConsoleIo = {
  input: NodeJS.ReadableStream;
  output: NodeJS.WritableStream & { columns?: number; isTTY?: boolean };
  env: Record<string, string | undefined>;
  /** Where typed lines are kept between runs; undefined keeps none. */
  historyFile: string | undefined;
};

/** The interactive console on a terminal; returns the exit code. */
export async function runConsole(flags: ToolFlags, io: ConsoleIo): Promise<number> {
  const style = pickStyle(io.output.isTTY === true, io.env);
  const write = (text: string) => void io.output.write(text);
  let client: TextClient;
  try {
    client = await connectFromFlags(flags, true);
  } catch (err) {
    process.stderr.write(`dumbconsole: cannot connect to ${flags.host}:${flags.port}: ${(err as Error).message}\n`);
    return 2;
  }
  let user: string | undefined;
  /** The request that logged in, replayed by the client after a reconnect. */
  let remembered = false;
  let raw = false;
  let wrap = false;
  let quitting = false;
  /** The prompt is on screen (no request of the user's is running). */
  let promptShown = false;
  let hintShown = false;
  /** The inbox position once a typed `resume` was answered: epoch and last seq shown, resumed from after a reconnect. */
  let inbox: { epoch: string; seq: number } | undefined;
  /** The `<after>` of the typed `resume` waiting for its reply. */
  let resumeAfter: string | undefined;
  let commands = BUILTIN_COMMANDS;
  let usages: ReadonlyMap<string, string> = new Map();
  const rl: Interface = createInterface({
    input: io.input,
    output: io.output,
    terminal: true,
    history: io.historyFile === undefined ? [] : readHistory(io.historyFile),
    historySize: HISTORY_SIZE,
    completer: (line: string) => complete(line, [...commands, 'help']),
  });
  const cursorAtEnd = () => (rl as unknown as { cursor: number }).cursor === rl.line.length;

  // The hint sits after the cursor: cleared before readline handles a key, drawn again after.
  const clearHint = () => {
    if (hintShown) write('\x1b[K');
    hintShown = false;
  };
  const drawHint = () => {
    // without colour a hint would read as typed text
    if (style === PLAIN || !promptShown || quitting || !cursorAtEnd()) return;
    const hint = hintFor(rl.line, usages);
    if (hint === '' || rl.getPrompt().length + rl.line.length + hint.length >= (io.output.columns || 80)) return; // 0 when the terminal does not tell
    write(`${style.dim(hint)}\x1b[${hint.length}D`);
    hintShown = true;
  };
  io.input.prependListener('keypress', clearHint);
  io.input.on('keypress', drawHint);

  const showPrompt = () => {
    rl.setPrompt(promptFor(flags.host, flags.port, user, client.connected));
    promptShown = true;
    rl.prompt(true);
    drawHint();
  };
  /** A line of output on its own line: above the prompt when it is shown, else where the cursor is. */
  const print = (text: string) => {
    if (quitting) return;
    hintShown = false;
    write(printAbove(text, promptShown ? rl.getPrompt() : '', rl.line));
    drawHint();
  };

  const refreshCommands = async () => {
    try {
      const reply = await client.request('commands');
      if (reply[0] === 'commands') commands = reply.slice(1);
    } catch {
      commands = BUILTIN_COMMANDS; // the info module is not loaded
      return;
    }
    const found = new Map<string, string>();
    await Promise.all(
      commands.map(async (c) => {
        const reply = await client.request('help', c).catch(() => []);
        if (reply[0] === 'help' && reply[2] !== undefined) found.set(c, reply[2]);
      }),
    );
    usages = found;
  };

  client.on('push', (fields) => {
    if (fields[0] === 'inbox' && inbox !== undefined && /^\d+$/.test(fields[1] ?? '')) inbox.seq = Math.max(inbox.seq, Number(fields[1]));
    print(describePush(fields, style));
  });
  // replies print as they arrive, so a login's ok comes before the stored messages that follow it
  client.on('reply', (fields) => {
    if (fields[0] === 'req' && String(fields[1]).startsWith(AUTO_ID)) return; // not the console's own look-ups
    // the reply to a typed resume comes before the entries it announces: the position starts here
    const resumed = fields[0] === 'req' ? fields.slice(2) : fields;
    if (resumeAfter !== undefined && resumed[0] === 'resumed') {
      inbox = { epoch: resumed[1] ?? '', seq: resumeAfter === 'latest' ? Number(resumed[2]) : Number(resumeAfter) };
    }
    print(describeReply(fields, style));
  });
  client.on('serverError', (err) => print(describeReply(err.fields, style)));
  client.on('frame', (dir, frame) => raw && print(style.dim(hexLine(dir, frame))));
  client.on('close', () => {
    if (quitting) return;
    print(style.error('connection lost; reconnecting...'));
    if (promptShown) showPrompt();
  });
  client.on('reconnected', (loginError?: ReplyError) => {
    if (quitting) return;
    const where = `reconnected to ${flags.host}:${flags.port}`;
    if (!remembered) print(style.dim(where));
    else if (loginError === undefined) {
      print(style.dim(`${where}; logged in again as ${user}`));
      if (inbox !== undefined) void resumeInbox(inbox);
    } else {
      print(style.error(`${where}; logging in again as ${user} failed (${loginError.message}): you are logged out`));
      user = undefined;
      remembered = false;
    }
    void refreshCommands();
    if (promptShown) showPrompt();
  });
  /** After a reconnect: the inbox from the last entry shown, so nothing is missed and nothing shown twice. */
  const resumeInbox = async (at: { epoch: string; seq: number }) => {
    print(style.dim(`resuming the inbox after #${at.seq}`));
    const reply = await client
      .request('resume', at.epoch, String(at.seq))
      .catch((err: unknown) => errorFields(err) ?? ['error', 'fatal', 'connection', (err as Error).message]);
    if (reply[0] === 'error') inbox = undefined; // stream_reset: the hint printed says what to do
    print(describeReply(reply, style));
  };
  rl.on('line', () => {
    promptShown = false;
    hintShown = false;
  });
  rl.on('SIGINT', () => rl.close()); // Ctrl-C leaves, as in redis-cli
  rl.on('close', () => {
    quitting = true;
    void client.close();
  });

  void refreshCommands();
  showPrompt();
  for await (const line of rl) {
    const text = line.trim();
    if (text !== '' && !SECRET_LINE.test(text) && io.historyFile !== undefined) appendHistory(io.historyFile, text);
    if (text === ':quit') break;
    if (text === ':help' || text === 'help') print(`${HELP}\ncommands: ${commands.join(' ')}`);
    else if (/^help\s+\S/.test(text)) {
      const reply = await client
        .request('help', text.slice(4).trim())
        .catch((err: unknown) => errorFields(err) ?? ['error', 'fatal', 'connection', (err as Error).message]);
      print(describeReply(reply, style));
    } else if (text === ':raw') print(`raw frames ${(raw = !raw) ? 'on' : 'off'}`);
    else if (text === ':req on' || text === ':req off') print(`req wrapping ${(wrap = text === ':req on') ? 'on' : 'off'}`);
    else if (text.startsWith(':')) print(style.error(`unknown console command ${text}; try :help`));
    else if (text !== '') {
      resumeAfter = resumeRequest(text);
      const reply = await send(client, text, wrap);
      resumeAfter = undefined;
      if (reply[2] === 'connection') print(describeReply(reply, style));
      const login = loginRequest(text);
      if (login !== undefined && (reply[0] === 'ok' || (reply[0] === 'req' && reply[2] === 'ok'))) {
        const was = user;
        user = (await client.request('whoami').catch(() => ['user', '?']))[1];
        if (was?.toLowerCase() !== user?.toLowerCase()) inbox = undefined; // another user's stream
        client.rememberLogin(login);
        remembered = true;
      }
    }
    if (quitting) break;
    showPrompt();
  }
  quitting = true;
  rl.close();
  await client.close();
  return 0;
}

let nextId = 1;

async function send(client: TextClient, text: string, wrap: boolean): Promise<string[]> {
  try {
    return await client.callPayload(wrap ? `req,c${nextId++},${text}` : text);
  } catch (err) {
    return errorFields(err) ?? ['error', 'fatal', 'connection', (err as Error).message];
  }
}

/** The fields of a request that logs in (`login`, or a module's `token`), unwrapped from `req`. */
function loginRequest(text: string): string[] | undefined {
  const parsed = parseFields(text);
  if (isFieldsFault(parsed)) return undefined;
  const fields = parsed[0] === 'req' ? parsed.slice(2) : parsed;
  return fields[0] === 'login' || fields[0] === 'token' ? fields : undefined;
}

/** The `<after>` of a typed `resume,<epoch>,<after>` (unwrapped from `req`), else undefined. */
function resumeRequest(text: string): string | undefined {
  const parsed = parseFields(text);
  if (isFieldsFault(parsed)) return undefined;
  const fields = parsed[0] === 'req' ? parsed.slice(2) : parsed;
  return fields[0] === 'resume' && fields.length === 3 ? fields[2] : undefined;
}

function readHistory(file: string): string[] {
  try {
    return readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .reverse()
      .slice(0, HISTORY_SIZE);
  } catch {
    return [];
  }
}

function appendHistory(file: string, line: string): void {
  try {
    appendFileSync(file, `${line}\n`, { mode: 0o600 });
  } catch {
    // history is a convenience; a read-only home directory is fine
  }
}

async function main(): Promise<void> {
  const flags = flagsOrUsage('dumbconsole', USAGE, process.argv.slice(2));
  if (flags === undefined) return;
  if (flags.help) {
    process.stdout.write(`${USAGE}\n\n${HELP}\n\nWithout a terminal on stdin it runs the lines of stdin like dumbclient.\n`);
    return;
  }
  if (process.stdin.isTTY !== true) {
    process.exitCode = await runScript(flags, stdinLines(), (l) => process.stdout.write(`${l}\n`));
    return;
  }
  process.exitCode = await runConsole(flags, { input: process.stdin, output: process.stdout, env: process.env, historyFile: HISTORY_FILE });
}

if (import.meta.main) await main();
