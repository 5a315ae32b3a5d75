#!/usr/bin/env node
/**
 * `npm run bench -- [scenario...] [flags]`: a closed-loop load generator (this
 * process) against textserver and its baselines (the minimal framed server
 * in tools/min-server.ts and, when redis-server is on PATH, Redis), each a
 * separate process on 127.0.0.1, in the same run. Reports rates, latency
 * percentiles (hdr-histogram), server CPU and RSS, the median over runs, and
 * each figure's ratio to the baseline. `--json` prints one JSON object.
 */
import { availableParallelism } from 'node:os';
import { SCENARIOS as BASIC, type Params, type Scenario } from './bench/scenarios.ts';
import { CLUSTER_SCENARIOS, enginesAvailable } from './bench/cluster.ts';
import { newWindow } from './bench/load.ts';
import { redisAvailable, systemCpuSeconds, systemRssBytes, type System } from './bench/systems.ts';
import { SPECIAL, type SpecialResult } from './bench/special.ts';

const SCENARIOS: Record<string, Scenario> = { ...BASIC, ...CLUSTER_SCENARIOS };

export type Row = {
  scenario: string;
  config: string;
  system: string;
  unit: string;
  rate: number;
  p50ms: number;
  p99ms: number;
  p999ms: number;
  maxMs: number;
  cpuPercent: number;
  rssMb: number;
  ratio?: number;
  /** The ratio to the baseline this system should reach (the cluster scenarios). */
  targetRatio?: number;
  runs: number[];
};

type Flags = Params & {
  runs: number;
  warmup: number;
  duration: number;
  json: boolean;
  scenarios: string[];
  idleConnections: number;
  presenceTtl: number;
  configs: Partial<Params>[] | undefined;
};

/** `group`: a name that runs several steps (`cluster`). */
const DEFAULT_PLAN: { scenario: string; group?: string; params: Partial<Params> }[] = [
  { scenario: 'nop', params: { connections: 50, pipeline: 1 } },
  { scenario: 'nop', params: { connections: 50, pipeline: 16 } },
  { scenario: 'nop', params: { connections: 1000, pipeline: 1 } },
  { scenario: 'whoami', params: { connections: 50, pipeline: 16 } },
  { scenario: 'send', params: { pairs: 50, pipeline: 1 } },
  { scenario: 'fanout', params: { fanout: 100, pipeline: 8 } },
  { scenario: 'ws', params: { connections: 50, pipeline: 1 } },
  { scenario: 'ws', params: { connections: 50, pipeline: 16 } },
  { scenario: 'login', params: {} },
  { scenario: 'idle', params: {} },
  { scenario: 'history', params: {} },
  { scenario: 'durable', params: {} },
  { scenario: 'resume', params: {} },
  { scenario: 'cluster-send', group: 'cluster', params: { pairs: 50, pipeline: 1 } },
  { scenario: 'cluster-fanout', group: 'cluster', params: { fanout: 100, pipeline: 8 } },
  { scenario: 'cluster-presence', group: 'cluster', params: {} },
];

const GROUPS = new Set(DEFAULT_PLAN.flatMap((p) => (p.group === undefined ? [] : [p.group])));

function parseFlags(argv: string[]): Flags {
  const f: Flags = {
    connections: 50,
    pipeline: 1,
    fanout: 100,
    pairs: 50,
    runs: 3,
    warmup: 1,
    duration: 3,
    json: false,
    scenarios: [],
    idleConnections: 10000,
    presenceTtl: 15,
    configs: undefined,
  };
  const num = (i: number) => {
    const v = Number(argv[i]);
    if (!Number.isFinite(v) || v < 0) throw new Error(`${argv[i - 1]} needs a number`);
    return v;
  };
  const given: Partial<Params> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--runs') f.runs = Math.max(1, Math.round(num(++i)));
    else if (a === '--warmup') f.warmup = num(++i);
    else if (a === '--duration') f.duration = num(++i);
    else if (a === '--connections' || a === '-c') given.connections = Math.min(5000, Math.max(1, Math.round(num(++i))));
    else if (a === '--pipeline' || a === '-p') given.pipeline = Math.min(1024, Math.max(1, Math.round(num(++i))));
    else if (a === '--fanout') given.fanout = Math.min(5000, Math.max(1, Math.round(num(++i))));
    else if (a === '--pairs') given.pairs = Math.min(1000, Math.max(1, Math.round(num(++i))));
    else if (a === '--idle-connections') f.idleConnections = Math.min(20000, Math.max(10, Math.round(num(++i))));
    else if (a === '--presence-ttl') f.presenceTtl = Math.max(1, Math.round(num(++i)));
    else if (a === '--json') f.json = true;
    else if (a.startsWith('--')) throw new Error(`unknown flag ${a}`);
    else if (SCENARIOS[a] === undefined && SPECIAL[a] === undefined && !GROUPS.has(a))
      throw new Error(`unknown scenario ${a}; scenarios: ${[...Object.keys(SCENARIOS), ...Object.keys(SPECIAL), ...GROUPS].join(', ')}`);
    else f.scenarios.push(a);
  }
  if (Object.keys(given).length > 0) f.configs = [given];
  return f;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

function progress(text: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[2K${text}`);
  else process.stderr.write(`${text}\n`);
}

/** Runs one scenario configuration: every contender, `runs` times, alternating their order. */
async function runScenario(scenario: Scenario, params: Params, flags: Flags, redis: boolean): Promise<Row[]> {
  const contenders = scenario.contenders(redis);
  const systems: System[] = [];
  for (const c of contenders) systems.push(await c.start(params));
  const samples = contenders.map(() => [] as { rate: number; p50: number; p99: number; p999: number; max: number; cpu: number; rss: number }[]);
  try {
    for (let run = 0; run < flags.runs; run++) {
      const order = contenders.map((_, i) => i);
      if (run % 2 === 1) order.reverse();
      for (const i of order) {
        const contender = contenders[i]!;
        const system = systems[i]!;
        progress(`bench ${scenario.describe(params)}: ${contender.label}, run ${run + 1}/${flags.runs}`);
        const window = newWindow();
        const stop = await contender.load(system, window, params);
        await sleep(flags.warmup * 1000);
        const cpu0 = systemCpuSeconds(system);
        const t0 = performance.now();
        window.measuring = true;
        await sleep(flags.duration * 1000);
        window.measuring = false;
        const elapsed = (performance.now() - t0) / 1000;
        const cpu = ((systemCpuSeconds(system) - cpu0) / elapsed) * 100;
        const rss = systemRssBytes(system) / 1024 / 1024;
        stop();
        const h = window.latency;
        samples[i]!.push({
          rate: window.count / elapsed,
          p50: h.getValueAtPercentile(50) / 1000,
          p99: h.getValueAtPercentile(99) / 1000,
          p999: h.getValueAtPercentile(99.9) / 1000,
          max: h.maxValue / 1000,
          cpu,
          rss,
        });
        await sleep(200);
      }
    }
  } finally {
    for (const s of systems) await s.stop();
  }
  const rows = contenders.map((c, i): Row => {
    const s = samples[i]!;
    return {
      scenario: scenario.name,
      config: scenario.describe(params),
      system: c.label,
      unit: scenario.unit,
      rate: median(s.map((x) => x.rate)),
      p50ms: median(s.map((x) => x.p50)),
      p99ms: median(s.map((x) => x.p99)),
      p999ms: median(s.map((x) => x.p999)),
      maxMs: median(s.map((x) => x.max)),
      cpuPercent: median(s.map((x) => x.cpu)),
      rssMb: median(s.map((x) => x.rss)),
      runs: s.map((x) => Math.round(x.rate)),
    };
  });
  const base = rows.find((_, i) => contenders[i]!.baseline);
  for (const r of rows) if (base !== undefined && base.rate > 0) r.ratio = r.rate / base.rate;
  if (scenario.targetRatio !== undefined) for (const r of rows) if (r !== base) r.targetRatio = scenario.targetRatio;
  return rows;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function fmt(n: number, digits = 2): string {
  if (!Number.isFinite(n)) return '-';
  return n >= 1000 ? Math.round(n).toLocaleString('en-US') : n.toFixed(digits);
}

function ratioCell(r: Row): string {
  if (r.ratio === undefined) return '';
  const ratio = `${r.ratio.toFixed(2)} ×`;
  return r.targetRatio === undefined ? ratio : `${ratio} (target ≥ ${r.targetRatio} ×: ${r.ratio >= r.targetRatio ? 'met' : 'not met'})`;
}

function table(rows: Row[], special: SpecialResult[]): string {
  const lines = [
    '| scenario | system | rate | p50 ms | p99 ms | p99.9 ms | max ms | server CPU % | RSS MB | ratio |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.config} | ${r.system} | ${fmt(r.rate, 0)} ${r.unit} | ${fmt(r.p50ms)} | ${fmt(r.p99ms)} | ${fmt(r.p999ms)} | ${fmt(r.maxMs)} | ${fmt(r.cpuPercent, 0)} | ${fmt(r.rssMb, 1)} | ${ratioCell(r)} |`,
    );
  }
  for (const s of special) {
    lines.push('', `${s.title}:`);
    for (const [k, v] of Object.entries(s.figures)) lines.push(`  ${k}: ${typeof v === 'number' ? fmt(v) : v}`);
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  let flags: Flags;
  try {
    flags = parseFlags(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n`);
    process.exitCode = 2;
    return;
  }
  const redis = redisAvailable();
  const defaults: Params = { connections: 50, pipeline: 1, fanout: 100, pairs: 50 };
  const plan =
    flags.scenarios.length === 0
      ? DEFAULT_PLAN
      : flags.scenarios.flatMap((s) => {
          // a group runs its steps; the flags' configuration, when given, replaces each step's
          const steps = GROUPS.has(s) ? DEFAULT_PLAN.filter((p) => p.group === s) : [{ scenario: s }];
          return steps.flatMap(({ scenario }) =>
            (flags.configs ?? DEFAULT_PLAN.filter((p) => p.scenario === scenario).map((p) => p.params)).map((params) => ({ scenario, params })),
          );
        });
  if (plan.some((p) => p.scenario.startsWith('cluster')) && !enginesAvailable())
    process.stderr.write('bench: the cluster scenarios need PostgreSQL and redis-server (Debian packages postgresql, redis-server): skipped\n');
  const rows: Row[] = [];
  const special: SpecialResult[] = [];
  const started = Date.now();
  for (const step of plan) {
    const params = { ...defaults, ...step.params, ...(flags.configs?.[0] ?? {}) };
    const scenario = SCENARIOS[step.scenario];
    if (scenario !== undefined) rows.push(...(await runScenario(scenario, params, flags, redis)));
    else special.push(await SPECIAL[step.scenario]!({ ...flags, ...params }, progress));
  }
  progress('');
  if (!process.stderr.isTTY) process.stderr.write('\n');
  const meta = {
    node: process.version,
    cpus: availableParallelism(),
    redis,
    runs: flags.runs,
    warmupSeconds: flags.warmup,
    durationSeconds: flags.duration,
    seconds: Math.round((Date.now() - started) / 1000),
  };
  if (flags.json) console.log(JSON.stringify({ meta, rows, special }));
  else
    console.log(
      `${table(rows, special)}\n\n(${meta.node}, ${meta.cpus} CPUs, median of ${meta.runs} runs of ${meta.durationSeconds}s after ${meta.warmupSeconds}s warm-up; redis ${redis ? 'found' : 'not on PATH'})`,
    );
}

await main();
