/** A smoke run of the benchmark tool: it produces sane numbers (no timing is asserted). */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { nodeArgs } from '../helpers/server.ts';

function bench(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [cmd, argv] = nodeArgs('tools/bench.ts', args);
  const proc = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => proc.on('close', (code) => resolve({ code, stdout, stderr })));
}

type Report = { rows: { scenario: string; system: string; rate: number; p50ms: number; p99ms: number; ratio?: number; rssMb: number }[] };

describe('bench smoke run', () => {
  it('measures nop against textserver and the minimal server', async () => {
    const r = await bench(['nop', '--connections', '4', '--pipeline', '2', '--runs', '1', '--warmup', '0.2', '--duration', '0.5', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as Report;
    const systems = report.rows.map((row) => row.system);
    expect(systems).toEqual(expect.arrayContaining(['min-server', 'textserver']));
    for (const row of report.rows) {
      expect(row.rate).toBeGreaterThan(100);
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
    expect(ts.rate).toBeGreaterThan(100);
    expect(ts.p99ms).toBeGreaterThan(0);
  }, 60_000);

  it('rejects an unknown scenario with exit code 2', async () => {
    const r = await bench(['nonsense']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown scenario/);
  });
});
