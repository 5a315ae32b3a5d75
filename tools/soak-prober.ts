/**
 * The soak's `nop` prober: one connection asking `nop` every 20 ms, one at a
 * time, timing each round trip: what an unrelated client sees while the
 * attacks run. It runs in a process of its own, so the soak's own load
 * (hundreds of clients and the attacks, in one event loop) does not show
 * in its figures.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { connect, type ConnectOptions } from '../src/client/client.ts';

export type RoundTrips = { samples: number; p50: number; p99: number; max: number; failed: number };

/** Starts the prober process; stop() resolves with its figures. */
export async function startProber(dial: ConnectOptions): Promise<{ stop(): Promise<RoundTrips> }> {
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', import.meta.filename, JSON.stringify(dial)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout! });
  const next = () =>
    new Promise<string>((resolve, reject) => {
      lines.once('line', resolve);
      child.once('exit', (code) => reject(new Error(`the prober exited with ${code}`)));
    });
  await next(); // connected
  return {
    async stop() {
      const result = next();
      child.stdin!.end();
      return JSON.parse(await result) as RoundTrips;
    },
  };
}

async function probe(dial: ConnectOptions): Promise<void> {
  const client = await connect(dial);
  const times: number[] = [];
  let failed = 0;
  let running = true;
  let pending = 0;
  process.stdin.resume();
  process.stdin.on('end', () => (running = false));
  console.log('connected');
  while (running) {
    pending = performance.now();
    try {
      await client.call('nop');
      times.push(performance.now() - pending);
    } catch {
      failed++;
    }
    pending = 0;
    await new Promise((r) => setTimeout(r, 20));
  }
  const sorted = times.sort((a, b) => a - b);
  const at = (q: number) => Number((sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0).toFixed(1));
  console.log(JSON.stringify({ samples: sorted.length, p50: at(0.5), p99: at(0.99), max: at(1), failed }));
  client.destroy();
}

if (process.argv[1] === import.meta.filename) await probe(JSON.parse(process.argv[2]!) as ConnectOptions);
