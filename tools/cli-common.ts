/** What dumbclient and dumbconsole share: flags, connecting, printing frames. */
import { connect, ReplyError, type TextClient } from '../src/client/client.ts';
import { formatFields } from '../src/text/fields.ts';

export type ToolFlags = {
  host: string;
  port: number;
  tls: boolean;
  insecure: boolean;
  json: boolean;
  hex: boolean;
  waitSeconds: number;
  /** `--help` or `-h`: print the usage and exit 0. */
  help: boolean;
  rest: string[];
};

export class UsageError extends Error {}

/** `--flag value` options first; every other argument is a request. */
export function parseToolFlags(argv: readonly string[]): ToolFlags {
  const flags: ToolFlags = { host: '127.0.0.1', port: 7878, tls: false, insecure: false, json: false, hex: false, waitSeconds: 0, help: false, rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${arg} needs a value`);
      return v;
    };
    switch (arg) {
      case '--host':
        flags.host = value();
        break;
      case '--port': {
        const v = value();
        flags.port = Number(v);
        if (!/^\d+$/.test(v) || flags.port > 65535) throw new UsageError(`--port: ${v} is not a port`);
        break;
      }
      case '--wait': {
        const v = value();
        flags.waitSeconds = Number(v);
        if (!Number.isFinite(flags.waitSeconds) || flags.waitSeconds < 0) throw new UsageError(`--wait: ${v} is not a number of seconds`);
        break;
      }
      case '--json':
        flags.json = true;
        break;
      case '--hex':
        flags.hex = true;
        break;
      case '--tls':
        flags.tls = true;
        break;
      case '--insecure':
        flags.insecure = true;
        break;
      case '--help':
      case '-h':
        flags.help = true;
        break;
      case '--':
        flags.rest.push(...argv.slice(i + 1));
        return flags;
      default:
        if (arg.startsWith('--')) throw new UsageError(`unknown flag ${arg}`);
        flags.rest.push(arg);
    }
  }
  return flags;
}

/** Parses the flags, or prints the problem and the usage and sets exit code 2 (undefined then). */
export function flagsOrUsage(tool: string, usage: string, argv: readonly string[]): ToolFlags | undefined {
  try {
    return parseToolFlags(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`${tool}: ${err.message}\n${usage}\n`);
    process.exitCode = 2;
    return undefined;
  }
}

export function connectFromFlags(flags: ToolFlags, reconnect = false): Promise<TextClient> {
  return connect({
    host: flags.host,
    port: flags.port,
    tls: flags.tls ? { insecure: flags.insecure } : undefined,
    reconnect,
  });
}

/** One received frame as a line: escaped fields as on the wire, or a JSON array. */
export function formatLine(fields: readonly string[], json: boolean): string {
  return json ? JSON.stringify(fields) : formatFields(fields);
}

/** Frame bytes as spaced hex: header, then payload. */
export function hexLine(direction: 'in' | 'out', frame: Buffer): string {
  const arrow = direction === 'in' ? '<' : '>';
  return `${arrow} ${frame.subarray(0, 4).toString('hex')} ${frame.subarray(4, 5).toString('hex')} ${frame.subarray(5).toString('hex')}`.trimEnd();
}

export function errorFields(err: unknown): string[] | undefined {
  return err instanceof ReplyError ? [...err.fields] : undefined;
}
