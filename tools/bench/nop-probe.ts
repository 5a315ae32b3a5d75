/**
 * The unrelated client of the durable scenarios, in a process of its own:
 * one `nop` every `intervalMs`, timed from its write to its reply. In the
 * load generator's process the time would also hold that event loop's
 * queue (thousands of other replies a second read before this one), which
 * is the generator's latency, not the server's.
 *
 * Forked with IPC: `measure` starts the window, `stop` answers
 * `{ p99, max, count }` (milliseconds) and exits.
 */
import { newWindow, openSocket, pacedLoop } from './load.ts';
import { encodeFrame } from '../../src/wire/frame-encoder.ts';

const [port, intervalMs] = process.argv.slice(2).map(Number) as [number, number];
const window = newWindow();
const socket = await openSocket(port);
const stop = pacedLoop(socket, encodeFrame('nop'), 5, intervalMs, window);

process.on('message', (message: 'measure' | 'stop') => {
  if (message === 'measure') {
    window.measuring = true;
    return;
  }
  window.measuring = false;
  stop();
  socket.destroy();
  const ms = (percentile: number) => window.latency.getValueAtPercentile(percentile) / 1000;
  process.send!({ p99: ms(99), max: window.latency.maxValue / 1000, count: window.count }, () => process.exit(0));
});
process.send!('ready');
