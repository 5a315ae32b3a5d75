/** config.ts: flags, TEXTSERVER_* variables, defaults, conversions, and errors that name the flag. */
import { describe, expect, it } from 'vitest';
import { CORE_FLAGS, ConfigError, envName, parseArgv, resolveModuleOption, resolveOptions, unknownFlags } from '../src/config.ts';

const refused = (argv: string[], env: Record<string, string> = {}) => {
  try {
    resolveOptions(argv, env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error(`accepted ${argv.join(' ')}`);
};

describe('parseArgv', () => {
  it('reads --name value, --name=value and bare --name', () => {
    expect(parseArgv(['--port', '9', '--host=::1', '--verbose', '--data', 'd', '--empty='])).toEqual(
      new Map<string, string | true>([
        ['port', '9'],
        ['host', '::1'],
        ['verbose', true],
        ['data', 'd'],
        ['empty', ''],
      ]),
    );
    expect(parseArgv(['--flag', '--next', 'v'])).toEqual(
      new Map<string, string | true>([
        ['flag', true],
        ['next', 'v'],
      ]),
    );
  });

  it('refuses positional arguments and a bare --', () => {
    expect(() => parseArgv(['serve'])).toThrow(new ConfigError('unexpected argument serve'));
    expect(() => parseArgv(['--port', '1', '2'])).toThrow('unexpected argument 2');
    expect(() => parseArgv(['--'])).toThrow('unexpected argument --');
  });
});

describe('resolveOptions', () => {
  it('gives the documented defaults', () => {
    const o = resolveOptions([], {});
    expect(o).toMatchObject({
      host: '127.0.0.1',
      port: 7878,
      data: './data',
      store: 'sqlite',
      maxRequest: 1048576,
      idleTimeoutMs: 300_000,
      requestTimeoutMs: 30_000,
    });
    expect(o.tls).toBeUndefined();
    expect(o.wsPort).toBeUndefined();
    expect(o.wsOrigins).toEqual([]);
    expect(o.values['mailbox-size']).toBe(CORE_FLAGS['mailbox-size'].def);
  });

  it('reads TEXTSERVER_* variables, and a flag wins over its variable', () => {
    expect(envName('max-connections-per-ip')).toBe('TEXTSERVER_MAX_CONNECTIONS_PER_IP');
    const env = { TEXTSERVER_PORT: '9000', TEXTSERVER_MAX_CONNECTIONS_PER_IP: '7', TEXTSERVER_IDLE_TIMEOUT: '1.5' };
    expect(resolveOptions([], env)).toMatchObject({ port: 9000, maxConnectionsPerIp: 7, idleTimeoutMs: 1500 });
    expect(resolveOptions(['--port', '9001'], env).port).toBe(9001);
  });

  it('converts each kind: seconds to ms, lists, optional ports, argon2 together', () => {
    const o = resolveOptions(
      [
        '--request-timeout',
        '0.25',
        '--ws-origins',
        ' https://a.example , ,https://b.example',
        '--ws-port',
        '0',
        '--argon2-memory-kib',
        '64',
        '--argon2-time',
        '3',
        '--log-level',
        'warn',
      ],
      {},
    );
    expect(o.requestTimeoutMs).toBe(250);
    expect(o.wsOrigins).toEqual(['https://a.example', 'https://b.example']);
    expect(o.wsPort).toBe(0);
    expect(o.httpPort).toBeUndefined();
    expect(o.argon2).toEqual({ memoryKiB: 64, time: 3, parallelism: 1 });
    expect(o.logLevel).toBe('warn');
  });

  it('refuses bad values with a message naming the flag and the value', () => {
    expect(refused(['--port', '65536'])).toBe('--port: "65536" is not a port number from 0 to 65535');
    expect(refused(['--port', 'http'])).toBe('--port: "http" is not a port number from 0 to 65535');
    expect(refused(['--max-request', '0'])).toBe('--max-request: "0" is not a whole number >= 1');
    expect(refused(['--max-request', '1.5'])).toBe('--max-request: "1.5" is not a whole number');
    expect(refused(['--idle-timeout', '-1'])).toBe('--idle-timeout: "-1" is not a positive number of seconds');
    expect(refused(['--idle-timeout'])).toBe('--idle-timeout: "" is not a positive number of seconds');
    expect(refused(['--log-level', 'loud'])).toBe('--log-level: "loud" is not one of trace, debug, info, warn, error, fatal, silent');
    expect(refused(['--host', ''])).toBe('--host: "" is not a non-empty value');
    expect(refused([], { TEXTSERVER_MAX_OUTBOUND: '10' })).toBe('--max-outbound: "10" is not a whole number >= 1024');
    expect(refused(['--tls-cert', 'cert.pem'])).toBe('--tls-cert and --tls-key go together');
  });

  it('keeps flags it does not know for the modules, and says which are nobody’s', () => {
    const o = resolveOptions(['--typing-timeout', '3', '--frobnicate'], {});
    expect(o.raw.flags.get('typing-timeout')).toBe('3');
    expect(unknownFlags(o.raw, new Set([...Object.keys(CORE_FLAGS), 'typing-timeout']))).toEqual(['frobnicate']);
  });
});

describe('resolveModuleOption', () => {
  const raw = (argv: string[], env: Record<string, string> = {}) => resolveOptions(argv, env).raw;

  it('gives the default when unset, reads flags and variables like the core', () => {
    expect(resolveModuleOption(raw([]), 'token-ttl', { type: 'number', default: 30, description: '' })).toBe(30);
    expect(resolveModuleOption(raw(['--token-ttl', '2.5']), 'token-ttl', { type: 'number', default: 30, description: '' })).toBe(2.5);
    expect(resolveModuleOption(raw([], { TEXTSERVER_FRIENDS_ONLY: 'yes' }), 'friends-only', { type: 'boolean', default: false, description: '' })).toBe(true);
    expect(resolveModuleOption(raw(['--friends-only']), 'friends-only', { type: 'boolean', default: false, description: '' })).toBe(true);
    expect(resolveModuleOption(raw(['--friends-only', 'off']), 'friends-only', { type: 'boolean', default: true, description: '' })).toBe(false);
    expect(resolveModuleOption(raw(['--kfcr-room', ' lobby ']), 'kfcr-room', { type: 'string', default: 'x', description: '' })).toBe('lobby');
  });

  it('refuses bad values naming the flag', () => {
    expect(() => resolveModuleOption(raw(['--friends-only', 'maybe']), 'friends-only', { type: 'boolean', default: false, description: '' })).toThrow(
      new ConfigError('--friends-only: "maybe" is not true or false'),
    );
    expect(() => resolveModuleOption(raw(['--token-ttl', '0']), 'token-ttl', { type: 'number', default: 1, min: 0.001, description: '' })).toThrow(
      '--token-ttl: "0" is not a number >= 0.001',
    );
    expect(() => resolveModuleOption(raw(['--token-ttl', 'soon']), 'token-ttl', { type: 'number', default: 1, description: '' })).toThrow(
      '--token-ttl: "soon" is not a number',
    );
    expect(() => resolveModuleOption(raw(['--kfcr-room']), 'kfcr-room', { type: 'string', default: 'x', description: '' })).toThrow(
      '--kfcr-room needs a value',
    );
  });
});
