#!/usr/bin/env node
/**
 * dumbconsole: an interactive console in the spirit of redis-cli. Line
 * editing, history in ~/.textserver_history, tab completion, pushes printed
 * as they arrive, reconnects. Without a terminal on stdin it runs like
 * dumbclient reading stdin.
 */
import { createInterface, type Interface } from 'node:readline';
import { appendFileSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { TextClient } from '../src/client/client.ts';
import { AUTO_ID } from '../src/client/protocol.ts';
import { isFieldsFault, parseFields } from '../src/text/fields.ts';
import { connectFromFlags, errorFields, flagsOrUsage, hexLine, type ToolFlags } from './cli-common.ts';
import { runScript, stdinLines } from './dumbclient.ts';
import { BUILTIN_COMMANDS, HELP, complete, describeReply, pickStyle, printAbove, promptFor } from './console-view.ts';

const HISTORY_FILE = join(homedir(), '.textserver_history');
const HISTORY_SIZE = 1000;
/** Lines that carry a password never reach the history file. */
const SECRET_LINE = /^(req,[^,]*,)?(login|register|token),/;

async function interactive(flags: ToolFlags): Promise<number> {
  const style = pickStyle(process.stdout.isTTY === true, process.env);
  let client: TextClient;
  try {
    client = await connectFromFlags(flags, true);
  } catch (err) {
    process.stderr.write(`dumbconsole: cannot connect to ${flags.host}:${flags.port}: ${(err as Error).message}\n`);
    return 2;
  }
  let user: string | undefined;
  let raw = false;
  let wrap = false;
  let commands = BUILTIN_COMMANDS;
  const rl: Interface = createInterface({
    input: process.stdin,
    output: process.stdout,
    history: readHistory(),
    historySize: HISTORY_SIZE,
    completer: (line: string) => complete(line, commands),
  });
  const prompt = () => rl.setPrompt(promptFor(flags.host, flags.port, user, client.connected));
  const above = (text: string) => process.stdout.write(printAbove(text, rl.getPrompt(), rl.line));

  const refreshCommands = async () => {
    try {
      const reply = await client.request('commands');
      if (reply[0] === 'commands') commands = reply.slice(1);
    } catch {
      commands = BUILTIN_COMMANDS; // the info module is not loaded
    }
  };
  client.on('push', (fields) => above(style.push(describeReply(fields, style))));
  // replies print as they arrive, so a login's ok comes before the stored messages that follow it
  client.on('reply', (fields) => {
    if (fields[0] !== 'req' || !String(fields[1]).startsWith(AUTO_ID)) console.log(describeReply(fields, style)); // not the console's own look-ups
  });
  client.on('serverError', (err) => above(describeReply(err.fields, style)));
  client.on('frame', (dir, frame) => raw && above(style.dim(hexLine(dir, frame))));
  client.on('close', () => {
    above(style.error('connection lost; reconnecting...'));
    prompt();
  });
  client.on('reconnected', () => {
    above(style.dim(`reconnected to ${flags.host}:${flags.port}`));
    prompt();
    rl.prompt(true);
  });
  void refreshCommands();
  prompt();
  rl.prompt();

  for await (const line of rl) {
    const text = line.trim();
    if (text !== '' && !SECRET_LINE.test(text)) appendHistory(text);
    if (text === ':quit') break;
    if (text === ':help') console.log(HELP);
    else if (text === ':raw') console.log(`raw frames ${(raw = !raw) ? 'on' : 'off'}`);
    else if (text === ':req on' || text === ':req off') console.log(`req wrapping ${(wrap = text === ':req on') ? 'on' : 'off'}`);
    else if (text.startsWith(':')) console.log(style.error(`unknown console command ${text}; try :help`));
    else if (text !== '') {
      const reply = await send(client, text, wrap);
      if (reply[2] === 'connection') console.log(describeReply(reply, style));
      if (isLogin(text) && (reply[0] === 'ok' || (reply[0] === 'req' && reply[2] === 'ok'))) {
        user = (await client.request('whoami').catch(() => ['user', '?']))[1];
      }
    }
    prompt();
    rl.prompt();
  }
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

function isLogin(text: string): boolean {
  const fields = parseFields(text);
  if (isFieldsFault(fields)) return false;
  return fields[0] === 'login' || (fields[0] === 'req' && fields[2] === 'login');
}

function readHistory(): string[] {
  try {
    return readFileSync(HISTORY_FILE, 'utf8').split('\n').filter((l) => l !== '').reverse().slice(0, HISTORY_SIZE);
  } catch {
    return [];
  }
}

function appendHistory(line: string): void {
  try {
    appendFileSync(HISTORY_FILE, `${line}\n`, { mode: 0o600 });
  } catch {
    // history is a convenience; a read-only home directory is fine
  }
}

async function main(): Promise<void> {
  const flags = flagsOrUsage('dumbconsole', 'usage: dumbconsole [--host H] [--port P] [--tls [--insecure]]', process.argv.slice(2));
  if (flags === undefined) return;
  if (process.stdin.isTTY !== true) {
    process.exitCode = await runScript(flags, stdinLines(), (l) => process.stdout.write(`${l}\n`));
    return;
  }
  process.exitCode = await interactive(flags);
}

await main();
