#!/usr/bin/env node
/**
 * dumbclient: one connection, each argument one request, each reply on its
 * own line. With no request arguments it reads requests from stdin, one a line.
 * Exit 0: no error replies; 1: some reply was an error tuple; 2: connection or usage problem.
 */
import { createInterface } from 'node:readline';
import type { TextClient } from '../src/client/client.ts';
import { connectFromFlags, errorFields, flagsOrUsage, formatLine, hexLine, type ToolFlags } from './cli-common.ts';

const USAGE = 'usage: dumbclient [--host H] [--port P] [--tls [--insecure]] [--wait SECONDS] [--json] [--hex] [request ...]';

const HELP = `${USAGE}

Sends each request (comma syntax, e.g. login,bob,password1) on one connection,
in order, and prints each reply and push as it arrives, one a line, escaped as
on the wire. Without request arguments it reads requests from stdin, one a line.

  --host H          server address (default 127.0.0.1)
  --port P          server port (default 7878)
  --tls             connect with TLS; --insecure accepts a self-signed certificate
  --wait SECONDS    after the last reply, keep printing pushes this long
  --json            print each frame as a JSON array of fields
  --hex             print raw frames in hex instead
  -h, --help        this help

Exit code 0: no error replies; 1: some reply was an error tuple; 2: connection
or usage problem. After a fatal error the server closes the connection: the
requests not sent yet are reported on stderr.`;

/** Runs a script of requests; returns the exit code. `lines` yields requests in order. */
export async function runScript(flags: ToolFlags, lines: AsyncIterable<string> | Iterable<string>, out: (line: string) => void): Promise<number> {
  let client: TextClient;
  try {
    client = await connectFromFlags(flags);
  } catch (err) {
    process.stderr.write(`dumbclient: cannot connect to ${flags.host}:${flags.port}: ${(err as Error).message}\n`);
    return 2;
  }
  let sawError = false;
  let lost = false;
  const print = (fields: readonly string[]) => {
    if (!flags.hex) out(formatLine(fields, flags.json));
  };
  if (flags.hex) client.on('frame', (dir, frame) => out(hexLine(dir, frame)));
  // Replies and pushes print as they arrive, so the output keeps the wire's order.
  client.on('push', print);
  client.on('reply', print);
  client.on('serverError', (err) => {
    sawError = true;
    print(err.fields);
  });
  client.on('close', () => (lost = true));
  for await (const line of lines) {
    if (line.trim() === '') continue;
    if (lost) {
      process.stderr.write(`dumbclient: the server closed the connection; not sent: ${JSON.stringify(line)} and the requests after it\n`);
      return sawError ? 1 : 2;
    }
    try {
      await client.callPayload(line);
    } catch (err) {
      if (errorFields(err) === undefined) {
        process.stderr.write(`dumbclient: the server closed the connection; not answered: ${JSON.stringify(line)}, and the requests after it were not sent\n`);
        return sawError ? 1 : 2;
      }
      sawError = true;
    }
  }
  if (flags.waitSeconds > 0 && !lost) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, flags.waitSeconds * 1000);
      client.once('close', () => (clearTimeout(timer), resolve()));
    });
  }
  await client.close();
  return sawError ? 1 : 0;
}

/** stdin lines, read only once the script starts consuming them (so none are lost while connecting). */
export async function* stdinLines(): AsyncIterable<string> {
  for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) yield line;
}

async function main(): Promise<void> {
  const flags = flagsOrUsage('dumbclient', USAGE, process.argv.slice(2));
  if (flags === undefined) return;
  if (flags.help) {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  const lines = flags.rest.length > 0 ? flags.rest : stdinLines();
  process.exitCode = await runScript(flags, lines, (line) => process.stdout.write(`${line}\n`));
}

if (import.meta.main) await main();
