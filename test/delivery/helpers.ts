/** Inbox connections for the delivery tests (DELIVERY.md section 3). */
import { expect } from 'vitest';
import { RawConnection } from '../helpers/raw.ts';
import { PW } from '../helpers/users.ts';

export type Resumed = { c: RawConnection; epoch: string; head: number };

/** `sync`, `login`, `resume,<epoch>,<after>` on a new connection; the reply must be `resumed`. */
export async function inboxConnection(port: number, user: string, epoch = '', after = '0', opened?: RawConnection[]): Promise<Resumed> {
  const c = await RawConnection.open(port);
  opened?.push(c);
  expect(await c.ask('sync')).toBe('ok');
  expect(await c.ask('login', user, PW)).toBe('ok');
  const reply = await c.ask('resume', epoch, after);
  const m = /^resumed,([A-Za-z0-9]{8,16}),(\d+)$/.exec(reply);
  expect(m, `resume reply ${reply}`).not.toBeNull();
  return { c, epoch: m![1]!, head: Number(m![2]) };
}

/** The `inbox,...` frames a connection got, in order. */
export function entries(c: RawConnection): string[] {
  return c.frames.filter((f) => f.startsWith('inbox,'));
}

export function seqOf(frame: string): number {
  return Number(frame.split(',')[1]);
}

/** Waits until the connection got `count` inbox frames in all; returns them. */
export async function waitEntries(c: RawConnection, count: number, timeoutMs = 10_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  while (entries(c).length < count) {
    if (c.closed) throw new Error(`closed with ${entries(c).length} of ${count} entries: ${JSON.stringify(c.frames.slice(-5))}`);
    if (Date.now() > deadline) throw new Error(`timed out with ${entries(c).length} of ${count} entries: ${JSON.stringify(c.frames.slice(-5))}`);
    await c.waitFrames(c.frames.length + 1, Math.max(1, deadline - Date.now())).catch(() => {});
  }
  return entries(c).slice(0, count);
}

/** Seqs 1..n, or from..to. */
export function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
}
