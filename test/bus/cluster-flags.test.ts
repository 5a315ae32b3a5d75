/** --bus, --node-id and --presence-ttl (CLUSTER.md): resolved, and refused with a SQLite store at start. */
import { hostname } from 'node:os';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, resolveOptions } from '../../src/config.ts';
import { removeDir, spawnServerRaw, tempDir } from '../helpers/server.ts';

const dirs: string[] = [];
afterAll(() => dirs.forEach(removeDir));

describe('cluster flags', () => {
  it('default to one process: no bus, a node id of host name and pid, a 15 s presence TTL', () => {
    const o = resolveOptions([], {});
    expect(o.bus).toBeUndefined();
    expect(o.nodeId).toContain(String(process.pid));
    expect(
      o.nodeId.startsWith(
        hostname()
          .replace(/[^A-Za-z0-9_.:-]/g, '_')
          .slice(0, 20),
      ),
    ).toBe(true);
    expect(o.presenceTtlMs).toBe(15_000);
  });

  it('read flags and TEXTSERVER_* variables', () => {
    const o = resolveOptions(['--store', 'postgres://p@h/db', '--node-id', 'n1', '--presence-ttl', '2'], { TEXTSERVER_BUS: 'redis://127.0.0.1:6379' });
    expect(o.bus).toBe('redis://127.0.0.1:6379');
    expect(o.nodeId).toBe('n1');
    expect(o.presenceTtlMs).toBe(2000);
  });

  it.each([
    [['--bus', 'redis://127.0.0.1:6379'], /--bus needs a postgres:\/\/ --store/],
    [['--bus', 'http://x', '--store', 'postgres://p@h/db'], /--bus: "http:\/\/x" is not a redis/],
    // node-redis would throw a bare "Invalid URL" at start (exit code 1); the password stays out of the message
    [['--bus', 'redis://:hunter2@127.0.0.1:notaport', '--store', 'postgres://p@h/db'], /^--bus: "redis:\/\/:\*\*\*@127\.0\.0\.1:notaport" is not a redis/],
    [['--bus', 'redis:///', '--store', 'postgres://p@h/db'], /--bus: "redis:\/\/\/" is not a redis/],
    [['--node-id', 'has space'], /--node-id/],
    [['--presence-ttl', '0'], /--presence-ttl/],
  ])('%j is refused', (argv, message) => {
    expect(() => resolveOptions(argv, {})).toThrow(ConfigError);
    expect(() => resolveOptions(argv, {})).toThrow(message);
  });

  it('--bus with a SQLite store stops the server at start with a one-line message and exit code 2', async () => {
    const data = tempDir();
    dirs.push(data);
    const s = spawnServerRaw(['--data', data, '--bus', 'redis://127.0.0.1:6379']);
    expect(await s.exited).toBe(2);
    expect(s.lines).toEqual(["textserver: --bus needs a postgres:// --store: a SQLite store is one process's and cannot be shared by the nodes of a cluster"]);
  });
});
