/**
 * The delivery checker's verdict (DELIVERY.md §4), as a pure function of
 * what the run recorded: every send and its outcome, every inbox read from
 * 0 at the end, and what each client processed live. Unit-tested on
 * synthetic histories, including ones that must fail.
 */

/** `ok` acknowledged; `error` answered with an error tuple; `unknown` the reply never came (the send was given up). */
export type Outcome = 'ok' | 'error' | 'unknown';

export type Attempt = {
  readonly from: string;
  /** The sender's counter: the text is `<from>:<n>`. */
  readonly n: number;
  readonly to: string;
  readonly key: string;
  outcome: Outcome;
  /** The error type for `error`. */
  error?: string;
  /** Position among the sender's oks (0, 1, 2...) for `ok`. */
  ackOrder?: number;
};

export type Entry = { readonly seq: number; readonly fields: readonly string[] };
/** A user's inbox as read from 0 at the end: the `resumed` epoch and head, and the entries in the order they came. */
export type FinalStream = { readonly epoch: string; readonly head: number; readonly entries: readonly Entry[] };
/** An entry a client processed while the run went on, and the epoch it belonged to. */
export type LiveEntry = Entry & { readonly epoch: string };

export type History = {
  readonly users: readonly string[];
  /** The `<command>` of every checker send (`send,<to>,<command>,<from>:<n>`). */
  readonly command: string;
  readonly attempts: readonly Attempt[];
  readonly finals: ReadonlyMap<string, FinalStream>;
  /** Per client, the entries it processed (after the library dropped repeats), in order. */
  readonly live: ReadonlyMap<string, readonly LiveEntry[]>;
  /** Per client, each resume answered `stream_reset` (what was asked, and why). */
  readonly resets: ReadonlyMap<string, readonly string[]>;
};

export type PropertyResult = { readonly name: string; passed: number; failed: number; firstFailure?: string };

/**
 * The errors a logged-in client's `once,<key>,send,...` to a registered user
 * may get: anything else (not_logged_in after a dropped connection, say)
 * is the server refusing a send it should have run.
 */
export const EXPECTED_REFUSALS: ReadonlySet<string> = new Set(['mailbox_full', 'unavailable']);

export const PROPERTIES = {
  delivered: 'every acknowledged send is in the recipient’s inbox exactly once',
  carbon: 'every acknowledged send is in the sender’s inbox exactly once as a carbon',
  order: 'entries from one sender are in the order of its oks',
  invented: 'nothing appears that was never sent',
  unknown: 'a send whose reply was lost appears at most once',
  refused: 'a send refused with an error appears nowhere',
  cause: 'a send is refused only for a cause a logged-in client can meet (mailbox_full, unavailable)',
  together: 'a message and its carbon are both there or both missing',
  dense: 'seqs are dense: 1..head, each once, in order',
  kept: 'every entry a client saw live is in the final inbox unchanged',
  live: 'each client saw a dense stream live, never reset',
} as const;

type Tally = { result: PropertyResult; pass(): void; fail(example: string): void };

function tally(name: string): Tally {
  const result: PropertyResult = { name, passed: 0, failed: 0 };
  return {
    result,
    pass: () => void result.passed++,
    fail(example) {
      result.failed++;
      result.firstFailure ??= example;
    },
  };
}

const lower = (name: string) => name.toLowerCase();
const text = (from: string, n: number) => `${from}:${n}`;

/** Where the entries of one send landed: seqs of the message in the recipient's inbox and of the carbon in the sender's. */
type Found = { messages: number[]; carbons: number[] };

export function verify(history: History): PropertyResult[] {
  const t = Object.fromEntries(Object.entries(PROPERTIES).map(([k, name]) => [k, tally(name)])) as Record<keyof typeof PROPERTIES, Tally>;
  const byText = new Map<string, Attempt>();
  for (const a of history.attempts) byText.set(text(lower(a.from), a.n), a);
  const found = new Map<Attempt, Found>();
  const where = (a: Attempt) => {
    let f = found.get(a);
    if (f === undefined) found.set(a, (f = { messages: [], carbons: [] }));
    return f;
  };

  for (const user of history.users) if (!history.finals.has(user)) t.dense.fail(`${user}: the final inbox could not be read`);
  for (const [owner, stream] of history.finals) {
    // dense: seq i+1 at position i, and as many as the head says
    const bad = stream.entries.findIndex((e, i) => e.seq !== i + 1);
    if (bad >= 0)
      t.dense.fail(`${owner}: entry ${bad + 1} of the replay has seq ${stream.entries[bad]!.seq} (after ${bad === 0 ? 'none' : stream.entries[bad - 1]!.seq})`);
    else if (stream.entries.length !== stream.head) t.dense.fail(`${owner}: head ${stream.head} but ${stream.entries.length} entries replayed`);
    else t.dense.pass();

    for (const e of stream.entries) {
      const attempt = matchEntry(owner, e, history.command, byText);
      if (attempt === undefined) {
        t.invented.fail(`${owner}'s inbox seq ${e.seq}: ${e.fields.join(',')} was never sent`);
        continue;
      }
      t.invented.pass();
      if (e.fields[0] === 'send') where(attempt).messages.push(e.seq);
      else where(attempt).carbons.push(e.seq);
    }
  }

  const describe = (a: Attempt) => `${text(a.from, a.n)} to ${a.to} (${a.outcome === 'error' ? `error ${a.error}` : a.outcome})`;
  const seqs = (list: number[]) => (list.length === 0 ? 'nowhere' : `at seq ${list.join(', ')}`);
  for (const a of history.attempts) {
    const f = found.get(a) ?? { messages: [], carbons: [] };
    const inbox = `${a.to}'s inbox`;
    const own = `${a.from}'s inbox`;
    if (a.outcome === 'ok') {
      if (f.messages.length === 1) t.delivered.pass();
      else t.delivered.fail(`${describe(a)} is in ${inbox} ${f.messages.length} times (${seqs(f.messages)})`);
      if (f.carbons.length === 1) t.carbon.pass();
      else t.carbon.fail(`${describe(a)} is in ${own} ${f.carbons.length} times as a carbon (${seqs(f.carbons)})`);
    } else if (a.outcome === 'unknown' || a.error === 'unavailable') {
      // unavailable is not recorded under the key: like a lost reply, it may or may not have run
      if (f.messages.length <= 1 && f.carbons.length <= 1) t.unknown.pass();
      else t.unknown.fail(`${describe(a)} is in ${inbox} ${f.messages.length} times (${seqs(f.messages)}) and in ${own} ${f.carbons.length} times`);
    } else if (f.messages.length === 0 && f.carbons.length === 0) t.refused.pass();
    else t.refused.fail(`${describe(a)} is in ${inbox} ${seqs(f.messages)} and in ${own} ${seqs(f.carbons)}`);
    if (a.outcome === 'error') {
      if (EXPECTED_REFUSALS.has(a.error ?? '')) t.cause.pass();
      else t.cause.fail(`${describe(a)}: the sender was logged in and the recipient exists`);
    }
    if (f.messages.length === f.carbons.length) t.together.pass();
    else
      t.together.fail(`${describe(a)}: ${f.messages.length} in ${inbox} (${seqs(f.messages)}) but ${f.carbons.length} carbons in ${own} (${seqs(f.carbons)})`);
  }

  checkOrder(history, byText, t.order);
  checkLive(history, t.kept, t.live);
  return Object.values(t).map((x) => x.result);
}

/** The attempt an entry of `owner`'s inbox stands for, if it is exactly what that attempt would make. */
function matchEntry(owner: string, e: Entry, command: string, byText: ReadonlyMap<string, Attempt>): Attempt | undefined {
  const [kind, peer, cmd, body, ...extra] = e.fields;
  if (extra.length > 0 || cmd !== command || peer === undefined || body === undefined) return undefined;
  const attempt = byText.get(lower(body));
  if (attempt === undefined) return undefined;
  if (kind === 'send')
    return lower(peer) === lower(attempt.from) && lower(owner) === lower(attempt.to) && body === text(attempt.from, attempt.n) ? attempt : undefined;
  if (kind === 'sent')
    return lower(peer) === lower(attempt.to) && lower(owner) === lower(attempt.from) && body === text(attempt.from, attempt.n) ? attempt : undefined;
  return undefined;
}

/**
 * Per recipient and sender (the messages), and per sender (its carbons):
 * the acknowledged sends must come in the order their oks came.
 */
function checkOrder(history: History, byText: ReadonlyMap<string, Attempt>, order: Tally): void {
  for (const [owner, stream] of history.finals) {
    const lines = new Map<string, { ack: number; seq: number; label: string }[]>();
    for (const e of stream.entries) {
      const a = matchEntry(owner, e, history.command, byText);
      if (a === undefined || a.outcome !== 'ok' || a.ackOrder === undefined) continue;
      const line = e.fields[0] === 'send' ? `messages from ${a.from} in ${owner}'s inbox` : `carbons in ${owner}'s inbox`;
      const list = lines.get(line) ?? [];
      list.push({ ack: a.ackOrder, seq: e.seq, label: text(a.from, a.n) });
      lines.set(line, list);
    }
    for (const [line, list] of lines) {
      const i = list.findIndex((x, j) => j > 0 && x.ack <= list[j - 1]!.ack);
      if (i < 0) order.pass();
      else {
        const [a, b] = [list[i - 1]!, list[i]!];
        order.fail(`${line}: ${a.label} (ok #${a.ack + 1}) at seq ${a.seq} comes before ${b.label} (ok #${b.ack + 1}) at seq ${b.seq}`);
      }
    }
  }
}

/** What clients processed live must survive (same epoch, same seq, same fields), and must have been a dense stream. */
function checkLive(history: History, kept: Tally, live: Tally): void {
  for (const [owner, entries] of history.live) {
    const final = history.finals.get(owner);
    for (const e of entries) {
      const there = final?.entries[e.seq - 1];
      if (final === undefined) kept.fail(`${owner}: no final inbox read`);
      else if (final.epoch !== e.epoch) kept.fail(`${owner} saw seq ${e.seq} in epoch ${e.epoch}, the final inbox has epoch ${final.epoch}`);
      else if (there === undefined || there.seq !== e.seq || there.fields.join('\u0000') !== e.fields.join('\u0000')) {
        kept.fail(
          `${owner} saw seq ${e.seq} as ${e.fields.join(',')}; the final inbox has ${there === undefined ? 'no such seq' : `${there.fields.join(',')} at seq ${there.seq}`}`,
        );
      } else kept.pass();
    }
    const resets = history.resets.get(owner) ?? [];
    const gap = entries.findIndex((e, i) => e.seq !== (i === 0 ? 1 : entries[i - 1]!.seq + 1));
    if (resets.length > 0) live.fail(`${owner}: ${resets.length} resume${resets.length === 1 ? ' was' : 's were'} answered stream_reset (${resets[0]})`);
    else if (gap >= 0) live.fail(`${owner} saw seq ${entries[gap]!.seq} after ${gap === 0 ? 'nothing' : `seq ${entries[gap - 1]!.seq}`}`);
    else live.pass();
  }
}

/** `N passed, M failed` per property, with the first counter-example under a failing one. */
export function formatResults(results: readonly PropertyResult[]): string {
  return results
    .map(
      (r) =>
        `${r.failed === 0 ? 'PASS' : 'FAIL'} ${r.name}: ${r.passed} passed, ${r.failed} failed${r.firstFailure === undefined ? '' : `\n     first counter-example: ${r.firstFailure}`}`,
    )
    .join('\n');
}
