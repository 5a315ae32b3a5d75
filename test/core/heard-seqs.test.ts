/**
 * What a node counts as dealt with for a user's version 1 connections in a
 * cluster (src/core/heard-seqs.ts): the point a recovery after lost
 * publications reads from. Pure bookkeeping, so no server: the cross-node
 * behaviour is in test/cluster/faults.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { HeardSeqs } from '../../src/core/heard-seqs.ts';

describe('HeardSeqs', () => {
  it('starts at the head a login read, and folds what was heard while that read ran', async () => {
    const heard = new HeardSeqs();
    let answer!: (head: number) => void;
    heard.track(1, new Promise((resolve) => (answer = resolve)));
    heard.hear(1, 4); // committed before the read: at most the head it returns
    expect(heard.upTo(1)).toBeUndefined();
    answer(5);
    await heard.ready(1);
    expect(heard.upTo(1)).toBe(5);
    expect(heard.gapSize(1)).toBe(0);
    expect(heard.has(1, 3)).toBe(true);
    expect(heard.has(1, 6)).toBe(false);
  });

  it('advances only over seqs heard without a gap, and keeps the ones past a gap until it closes', async () => {
    const heard = new HeardSeqs();
    heard.track(1, Promise.resolve(0));
    await heard.ready(1);
    heard.hear(1, 1);
    heard.hear(1, 3); // 2 not heard (lost, or crossing with another node's)
    heard.hear(1, 4);
    expect(heard.upTo(1)).toBe(1);
    expect(heard.has(1, 3)).toBe(true);
    expect(heard.has(1, 2)).toBe(false);
    expect(heard.gapSize(1)).toBe(2);
    heard.hear(1, 2);
    expect(heard.upTo(1)).toBe(4);
    expect(heard.gapSize(1)).toBe(0);
  });

  it('a recovery that read the store to a seq settles everything up to it', async () => {
    const heard = new HeardSeqs();
    heard.track(1, Promise.resolve(2));
    await heard.ready(1);
    heard.hear(1, 9);
    heard.settle(1, 7);
    expect(heard.upTo(1)).toBe(7);
    heard.hear(1, 8);
    expect(heard.upTo(1)).toBe(9);
    heard.settle(1, 3); // never back
    expect(heard.upTo(1)).toBe(9);
  });

  it('a later login does not move the start back or forth; a failed read leaves it to the next one', async () => {
    const heard = new HeardSeqs();
    heard.track(1, Promise.resolve(undefined));
    await heard.ready(1);
    expect(heard.upTo(1)).toBeUndefined();
    heard.track(1, Promise.resolve(3));
    heard.track(1, Promise.resolve(8));
    await heard.ready(1);
    expect(heard.upTo(1)).toBe(3);
  });

  it('forgets a user whose last connection went: a read still on its way sets nothing', async () => {
    const heard = new HeardSeqs();
    let answer!: (head: number) => void;
    heard.track(1, new Promise((resolve) => (answer = resolve)));
    heard.drop(1);
    answer(4);
    await Promise.resolve();
    heard.hear(1, 5);
    expect(heard.upTo(1)).toBeUndefined();
    expect(heard.has(1, 5)).toBe(false);
  });
});
