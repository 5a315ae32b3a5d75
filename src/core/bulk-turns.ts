/**
 * A budget of bulk bytes per turn of the event loop, shared by every
 * connection: inbox replays, mailbox drains and `GET /api/inbox` pages read
 * up to about 1 MiB of stored entries at a time, and reading, decoding and
 * encoding such a page is tens of milliseconds of the one thread. Each
 * reader's work is bounded, but thirty of them resuming a big inbox at once
 * did all their pages in one turn, and another client's `nop` waited
 * behind all of them (p50 0.2-0.4 s, max 3 s, measured). Past the budget a
 * reader waits for a later turn, so every other connection is served in
 * between: a turn holds at most the budget plus one page of bulk work.
 */
import { currentTurn } from './turns.ts';

/** Bulk bytes (read from the store and written out) the process handles in one turn before the rest wait. */
export const BULK_BYTES_PER_TURN = 256 * 1024;

let turn = -1;
let spent = 0;
/** Claimed and not done yet, whatever the turn: a PostgreSQL read is on its way over several turns, and pages arriving together are handled in one. */
let inflight = 0;
const waiters: (() => void)[] = [];
let wakeScheduled = false;

function refresh(): void {
  const now = currentTurn();
  if (now !== turn) {
    turn = now;
    spent = 0;
  }
}

/** Waiters look again in the next turn (there is room again, or a claim was done). */
function wakeNextTurn(): void {
  if (wakeScheduled || waiters.length === 0) return;
  wakeScheduled = true;
  setImmediate(() => {
    wakeScheduled = false;
    for (const w of waiters.splice(0)) w();
  });
}

/** A step's claim on the budget, settled with its real size once known. */
export type BulkClaim = { readonly turn: number; readonly bytes: number };

/**
 * Resolves (at once when there is room) in a turn whose bulk budget is not
 * spent yet, and while less than a budget's worth is claimed by steps not
 * done yet (an asynchronous store read), claiming `bytes` (the most the
 * step may handle). Every claim must be given back with bulkDone, and
 * must not be held while waiting for anything but the step itself (a
 * client's reading, a retry's pause): it holds up every other bulk reader.
 */
export async function bulkTurn(bytes: number): Promise<BulkClaim> {
  for (;;) {
    const claim = bulkTurnNow(bytes);
    if (claim !== undefined) return claim;
    await new Promise<void>((resolve) => {
      waiters.push(resolve);
      // only this turn's budget is spent: the next turn has room (otherwise bulkDone wakes them)
      if (inflight < BULK_BYTES_PER_TURN) wakeNextTurn();
    });
  }
}

/**
 * bulkTurn's claim when this turn has room, without a promise; undefined
 * when the caller must wait with bulkTurn. A replay claims for each entry
 * it writes: with an await for each, `resume` of 1,000 small entries took
 * 18-27 ms instead of 15-23 (`npm run bench -- resume`).
 */
export function bulkTurnNow(bytes: number): BulkClaim | undefined {
  refresh();
  if (spent >= BULK_BYTES_PER_TURN || inflight >= BULK_BYTES_PER_TURN) return undefined;
  spent += bytes;
  inflight += bytes;
  return { turn, bytes };
}

/**
 * The step handled `actual` bytes: in the turn it claimed, what it claimed
 * beyond that goes back to the budget; in a later one (the read was
 * asynchronous), the turn that handles them pays for them.
 */
export function bulkDone(claim: BulkClaim, actual: number): void {
  refresh();
  inflight -= claim.bytes;
  spent = claim.turn === turn ? Math.max(0, spent - claim.bytes + actual) : spent + actual;
  wakeNextTurn();
}

/** Bytes of a page of stored entries, as read (string length: what is copied, decoded and encoded again). */
export function rowBytes(rows: readonly { readonly payload: string }[]): number {
  let n = 0;
  for (const r of rows) n += r.payload.length;
  return n;
}
