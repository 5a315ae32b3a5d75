/**
 * The drain's side of "nothing twice to one connection" in a cluster: an
 * entry stored as pending that this node already wrote live to a connection
 * (its received mark not yet committed) is marked, not written again, when
 * a drain to that connection reads it; and the record of it outlives a
 * drain page read before the mark committed. A fake store: what happens
 * between the read and the mark is what is under test, and a real store
 * gives no hold on it.
 */
import { describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import { MailboxDrains } from '../../src/core/mailbox-drain.ts';
import type { OutFrame } from '../../src/core/out-frame.ts';
import type { Session } from '../../src/core/session.ts';
import { WrittenLive } from '../../src/core/written-live.ts';
import { createLogger } from '../../src/log.ts';
import type { InboxData, InboxRow } from '../../src/store/inbox-data.ts';

const USER = { id: 7, name: 'r' };

/** Pending rows of USER; reads wait for `hold` when set. */
function fakeStore(seqs: number[]) {
  const pending = new Set(seqs);
  const store = {
    marked: [] as number[],
    hold: undefined as Promise<void> | undefined,
    reads: 0,
    data: {
      durableRead: <R>(fn: (db: never) => Promise<R>) => fn(undefined as never),
      pendingAfter: async (_db: unknown, _user: number, after: number, limit: number): Promise<InboxRow[]> => {
        store.reads++;
        await store.hold;
        return [...pending]
          .filter((s) => s > after)
          .sort((a, b) => a - b)
          .slice(0, limit)
          .map((seq) => ({ seq, kind: 0, pending: 1, payload: `send,s,n,${seq}` }));
      },
      markReceived: async (marks: ReadonlyMap<number, readonly number[]>) => {
        for (const seq of marks.get(USER.id) ?? []) {
          pending.delete(seq);
          store.marked.push(seq);
        }
      },
    } as unknown as InboxData,
  };
  return store;
}

function fakeSession() {
  const frames: string[] = [];
  const session = {
    user: USER,
    pushFrame(frame: OutFrame, written?: (err?: Error | null) => void) {
      frames.push(frame.payload);
      setImmediate(() => written?.(null));
      return true;
    },
  };
  return { frames, session: session as unknown as Session };
}

function drainsOf(data: InboxData, live: WrittenLive, heirs: Session[] = []) {
  const work: Promise<unknown>[] = [];
  const drains = new MailboxDrains(data, createLogger('silent'), () => 1 << 20, () => heirs, (p) => work.push(p), live);
  return { drains, settled: async () => void (await Promise.all(work)) };
}

describe('mailbox drain and entries written live', () => {
  it('skips an entry already written live to its connection and marks it; writes it to a connection that lacks it', async () => {
    const store = fakeStore([1, 2, 3]);
    const live = new WrittenLive();
    const a = fakeSession();
    const b = fakeSession();
    live.add(USER.id, 2, a.session);
    const { drains, settled } = drainsOf(store.data, live);
    drains.start(a.session, USER);
    await settled();
    expect(a.frames).toEqual(['send,s,n,1', 'send,s,n,3']);
    expect(store.marked.sort()).toEqual([1, 2, 3]);
    // marked and forgotten: the store no longer holds it as pending
    expect(live.has(USER.id, 2, a.session)).toBe(false);

    const again = fakeStore([4, 5]);
    live.add(USER.id, 5, a.session);
    const other = drainsOf(again.data, live);
    other.drains.start(b.session, USER);
    await other.settled();
    expect(b.frames).toEqual(['send,s,n,4', 'send,s,n,5']);
  });

  it('a mark committed while a page read is in flight is forgotten only once that page is written', async () => {
    const store = fakeStore([1, 2]);
    const live = new WrittenLive();
    const a = fakeSession();
    live.add(USER.id, 2, a.session);
    let release = () => {};
    store.hold = new Promise<void>((r) => (release = r));
    const { drains, settled } = drainsOf(store.data, live);
    drains.start(a.session, USER);
    // the read starts once the drain has its turn of the bulk budget (bulk-turns.ts)
    await eventually(() => expect(store.reads).toBe(1));
    // the mark of seq 2 commits now (another path marked it), after the page's read began
    let forgotten = false;
    drains.afterPage(USER.id, () => {
      forgotten = true;
      live.forget(USER.id, [2]);
    });
    expect(forgotten).toBe(false);
    release();
    await settled();
    expect(forgotten).toBe(true);
    // the page, read before the mark, still held 2 as pending: skipped on this connection all the same
    expect(a.frames).toEqual(['send,s,n,1']);
    // with no page in flight it runs at once
    let now = false;
    drains.afterPage(USER.id, () => (now = true));
    expect(now).toBe(true);
  });
});
