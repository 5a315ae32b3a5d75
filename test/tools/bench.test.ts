/** A smoke run of the benchmark tool: it produces sane numbers (no timing is asserted). */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { nodeArgs } from '../helpers/server.ts';
import { postgresBin } from '../../tools/postgres.ts';
import { redisBin } from '../../tools/redis.ts';

function bench(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [cmd, argv] = nodeArgs('tools/bench.ts', args);
  const proc = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => proc.on('close', (code) => resolve({ code, stdout, stderr })));
}

type Report = {
  rows: { scenario: string; system: string; rate: number; p50ms: number; p99ms: number; ratio?: number; targetRatio?: number; rssMb: number }[];
  special: { scenario: string; figures: Record<string, number | string> }[];
};

describe('bench smoke run', () => {
  it('measures nop against textserver and the minimal server', async () => {
    const r = await bench(['nop', '--connections', '4', '--pipeline', '2', '--runs', '1', '--warmup', '0.2', '--duration', '0.5', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as Report;
    const systems = report.rows.map((row) => row.system);
    expect(systems).toEqual(expect.arrayContaining(['min-server', 'textserver']));
    for (const row of report.rows) {
      // the tool measured a real flow; speed is the benchmark's business, not a test's (CI machines may be loaded)
      expect(row.rate).toBeGreaterThan(10);
      expect(row.p50ms).toBeGreaterThan(0);
      expect(row.p99ms).toBeGreaterThanOrEqual(row.p50ms);
      expect(row.rssMb).toBeGreaterThan(10);
    }
    expect(report.rows.find((row) => row.system === 'min-server')!.ratio).toBe(1);
  }, 60_000);

  it('measures send deliveries with their latency', async () => {
    const r = await bench(['send', '--pairs', '3', '--runs', '1', '--warmup', '0.2', '--duration', '0.5', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const ts = (JSON.parse(r.stdout) as Report).rows.find((row) => row.system === 'textserver')!;
    // deliveries were measured (a durable send each, on a possibly loaded machine): a floor, not a speed target
    expect(ts.rate).toBeGreaterThan(10);
    expect(ts.p99ms).toBeGreaterThan(0);
  }, 60_000);

  it.skipIf(postgresBin() === undefined || redisBin() === undefined)(
    'measures send and fanout on one node and across two, and a killed node going offline',
    async () => {
      const r = await bench([
        'cluster',
        '--pairs',
        '2',
        '--fanout',
        '3',
        '--runs',
        '1',
        '--warmup',
        '0.2',
        '--duration',
        '0.5',
        '--presence-ttl',
        '2',
        '--json',
      ]);
      expect(r.code, r.stderr).toBe(0);
      const report = JSON.parse(r.stdout) as Report;
      for (const scenario of ['cluster-send', 'cluster-fanout']) {
        const rows = report.rows.filter((row) => row.scenario === scenario);
        expect(rows.map((row) => row.system)).toEqual(['textserver 1 node', 'textserver 2 nodes']);
        expect(rows[0]!.ratio).toBe(1);
        expect(rows[1]!.targetRatio).toBe(0.5);
        for (const row of rows) expect(row.rate).toBeGreaterThan(0);
      }
      const presence = report.special.find((s) => s.scenario === 'cluster-presence')!;
      expect(presence.figures['presence TTL s']).toBe(2);
      expect(presence.figures['ms from SIGKILL to presence,A,offline (median)']).toBeGreaterThan(0);
      expect(presence.figures).not.toHaveProperty('runs where presence,A,offline never came (within target + 10 s)');
    },
    180_000,
  );

  it('rejects an unknown scenario with exit code 2', async () => {
    const r = await bench(['nonsense']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown scenario/);
  });
});
