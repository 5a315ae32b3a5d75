/** WriteBatch: the frames of one turn leave in one write, with their counters and write callbacks. */
import { describe, expect, it } from 'vitest';
import { WriteBatch } from '../../src/transport/write-batch.ts';

type Written = (err?: Error | null) => void;

function batch() {
  const writes: { bytes: string; done: Written | undefined }[] = [];
  const counters = { framesOut: 0, bytesOut: 0 };
  const b = new WriteBatch((bytes, done) => writes.push({ bytes: bytes.toString(), done }), counters);
  return { b, writes, counters };
}

/** process.nextTick callbacks (the batch's flush) have run once a promise job after them has. */
const nextTick = () => new Promise<void>((r) => process.nextTick(r));

describe('WriteBatch', () => {
  it('writes everything added in one turn as one write, on the next tick', async () => {
    const { b, writes, counters } = batch();
    b.add(Buffer.from('ab'));
    b.add(Buffer.from('cde'));
    expect(b.scheduled).toBe(true);
    expect(b.bytes).toBe(5);
    expect(writes).toEqual([]);
    await nextTick();
    expect(writes.map((w) => w.bytes)).toEqual(['abcde']);
    expect(writes[0]!.done).toBeUndefined(); // no callback asked for, none passed
    expect(counters).toEqual({ framesOut: 2, bytesOut: 5 });
    expect(b.bytes).toBe(0);
    expect(b.scheduled).toBe(false);
    b.add(Buffer.from('f'));
    await nextTick();
    expect(writes.map((w) => w.bytes)).toEqual(['abcde', 'f']);
  });

  it('while holding, waits for the owner to flush (the end of a read)', async () => {
    const { b, writes } = batch();
    b.holding = true;
    b.add(Buffer.from('x'));
    b.add(Buffer.from('y'));
    expect(b.scheduled).toBe(false);
    await nextTick();
    expect(writes).toEqual([]);
    b.holding = false;
    b.flush();
    expect(writes.map((w) => w.bytes)).toEqual(['xy']);
    b.flush(); // nothing queued: no empty write
    expect(writes).toHaveLength(1);
  });

  it('runs every write callback of the batch with the outcome of its one write', () => {
    const { b, writes } = batch();
    const outcomes: (string | null | undefined)[] = [];
    b.holding = true;
    b.add(Buffer.from('1'), (err) => outcomes.push(`first ${err?.message ?? 'ok'}`));
    b.add(Buffer.from('2'));
    b.add(Buffer.from('3'), (err) => outcomes.push(`third ${err?.message ?? 'ok'}`));
    b.flush();
    b.add(Buffer.from('4'), (err) => outcomes.push(`fourth ${err?.message ?? 'ok'}`));
    b.flush();
    expect(writes.map((w) => w.bytes)).toEqual(['123', '4']);
    writes[0]!.done!(new Error('reset'));
    writes[1]!.done!(null);
    expect(outcomes).toEqual(['first reset', 'third reset', 'fourth ok']);
  });
});
