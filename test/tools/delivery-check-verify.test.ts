/** The delivery checker's verdict on synthetic histories: a correct one passes, each kind of fault is caught and named. */
import { describe, expect, it } from 'vitest';
import {
  PROPERTIES,
  formatResults,
  verify,
  type Attempt,
  type Entry,
  type FinalStream,
  type History,
  type LiveEntry,
  type PropertyResult,
} from '../../tools/check-delivery/verify.ts';

const CMD = 'chk';
type Send = { from: string; to: string; outcome?: Attempt['outcome']; error?: string; lands?: boolean };

/** A history as a correct server would leave it: every ok (and every send with lands: true) in both inboxes, in send order. */
function build(sends: Send[], users = ['a', 'b', 'c']): { attempts: Attempt[]; streams: Map<string, Entry[]> } {
  const counters = new Map<string, number>();
  const acks = new Map<string, number>();
  const streams = new Map<string, Entry[]>(users.map((u) => [u, []]));
  const attempts: Attempt[] = [];
  const append = (owner: string, fields: string[]) => {
    const list = streams.get(owner)!;
    list.push({ seq: list.length + 1, fields });
  };
  for (const s of sends) {
    const n = counters.get(s.from) ?? 0;
    counters.set(s.from, n + 1);
    const outcome = s.outcome ?? 'ok';
    const attempt: Attempt = { from: s.from, n, to: s.to, key: `k${s.from}${n}`, outcome, ...(s.error === undefined ? {} : { error: s.error }) };
    if (outcome === 'ok') {
      attempt.ackOrder = acks.get(s.from) ?? 0;
      acks.set(s.from, attempt.ackOrder + 1);
    }
    attempts.push(attempt);
    if (outcome === 'ok' || s.lands === true) {
      append(s.to, ['send', s.from, CMD, `${s.from}:${n}`]);
      append(s.from, ['sent', s.to, CMD, `${s.from}:${n}`]);
    }
  }
  return { attempts, streams };
}

function history(attempts: Attempt[], streams: Map<string, Entry[]>, extra: Partial<History> = {}): History {
  const finals = new Map<string, FinalStream>([...streams].map(([u, entries]) => [u, { epoch: 'E1', head: entries.length, entries }]));
  const live = new Map<string, LiveEntry[]>([...streams].map(([u, entries]) => [u, entries.map((e) => ({ ...e, epoch: 'E1' }))]));
  return { users: [...streams.keys()], command: CMD, attempts, finals, live, resets: new Map(), ...extra };
}

const byName = (results: PropertyResult[], key: keyof typeof PROPERTIES) => results.find((r) => r.name === PROPERTIES[key])!;
const failing = (results: PropertyResult[]) => results.filter((r) => r.failed > 0).map((r) => r.name);

const SENDS: Send[] = [
  { from: 'a', to: 'b' },
  { from: 'b', to: 'a' },
  { from: 'a', to: 'b' },
  { from: 'c', to: 'c' }, // to oneself: one entry and one carbon in the same inbox
  { from: 'a', to: 'c', outcome: 'unknown', lands: true },
  { from: 'b', to: 'c', outcome: 'unknown' },
  { from: 'c', to: 'a', outcome: 'error', error: 'mailbox_full' },
  { from: 'a', to: 'b' },
];

describe('delivery checker verdict', () => {
  it('passes a correct history and counts every check', () => {
    const { attempts, streams } = build(SENDS);
    const results = verify(history(attempts, streams));
    expect(failing(results)).toEqual([]);
    expect(byName(results, 'delivered')).toMatchObject({ passed: 5, failed: 0 });
    expect(byName(results, 'carbon')).toMatchObject({ passed: 5, failed: 0 });
    expect(byName(results, 'unknown')).toMatchObject({ passed: 2, failed: 0 });
    expect(byName(results, 'refused')).toMatchObject({ passed: 1, failed: 0 });
    expect(byName(results, 'cause')).toMatchObject({ passed: 1, failed: 0 });
    expect(byName(results, 'invented').passed).toBe(12);
    expect(byName(results, 'dense').passed).toBe(3);
    expect(formatResults(results)).toMatch(/^PASS every acknowledged send is in the recipient’s inbox exactly once: 5 passed, 0 failed$/m);
  });

  it('catches an acknowledged send that is missing, with the message and carbon apart', () => {
    const { attempts, streams } = build(SENDS);
    // b's inbox loses a:1 (seq 3): renumbered, so only the loss is wrong
    streams.set(
      'b',
      streams
        .get('b')!
        .filter((e) => e.fields[3] !== 'a:1')
        .map((e, i) => ({ ...e, seq: i + 1 })),
    );
    const results = verify(history(attempts, streams));
    expect(failing(results)).toEqual([PROPERTIES.delivered, PROPERTIES.together]);
    expect(byName(results, 'delivered').firstFailure).toBe("a:1 to b (ok) is in b's inbox 0 times (nowhere)");
  });

  it('catches a duplicate, a lost reply delivered twice and a refused send that ran', () => {
    const { attempts, streams } = build(SENDS);
    const a = streams.get('a')!;
    const c = streams.get('c')!;
    a.push({ seq: a.length + 1, fields: ['sent', 'b', CMD, 'a:0'] });
    c.push({ seq: c.length + 1, fields: ['send', 'a', CMD, 'a:2'] });
    a.push({ seq: a.length + 1, fields: ['send', 'c', CMD, 'c:1'] });
    const results = verify(history(attempts, streams));
    expect(byName(results, 'carbon').firstFailure).toBe("a:0 to b (ok) is in a's inbox 2 times as a carbon (at seq 1, 6)");
    expect(byName(results, 'unknown').firstFailure).toBe("a:2 to c (unknown) is in c's inbox 2 times (at seq 3, 4) and in a's inbox 1 times");
    expect(byName(results, 'refused').firstFailure).toBe("c:1 to a (error mailbox_full) is in a's inbox at seq 7 and in c's inbox nowhere");
    expect(byName(results, 'together').failed).toBe(3);
  });

  it('catches a refusal a logged-in client should never get', () => {
    const { attempts, streams } = build([...SENDS, { from: 'b', to: 'a', outcome: 'error', error: 'not_logged_in' }]);
    const results = verify(history(attempts, streams));
    expect(failing(results)).toEqual([PROPERTIES.cause]);
    expect(byName(results, 'cause')).toMatchObject({
      passed: 1,
      failed: 1,
      firstFailure: 'b:2 to a (error not_logged_in): the sender was logged in and the recipient exists',
    });
  });

  it('catches entries out of the order of the oks, for messages and for carbons', () => {
    const { attempts, streams } = build(SENDS);
    const b = streams.get('b')!;
    // swap a:0 and a:1 in b's inbox
    const [i, j] = [b.findIndex((e) => e.fields[3] === 'a:0'), b.findIndex((e) => e.fields[3] === 'a:1')];
    [b[i], b[j]] = [
      { seq: b[i]!.seq, fields: b[j]!.fields },
      { seq: b[j]!.seq, fields: b[i]!.fields },
    ];
    const results = verify(history(attempts, streams, { live: new Map() }));
    expect(failing(results)).toEqual([PROPERTIES.order]);
    expect(byName(results, 'order').firstFailure).toBe("messages from a in b's inbox: a:1 (ok #2) at seq 1 comes before a:0 (ok #1) at seq 3");
    const swapped = build(SENDS);
    const own = swapped.streams.get('a')!;
    const [k, l] = [own.findIndex((e) => e.fields[3] === 'a:1'), own.findIndex((e) => e.fields[3] === 'a:3')];
    [own[k], own[l]] = [
      { seq: own[k]!.seq, fields: own[l]!.fields },
      { seq: own[l]!.seq, fields: own[k]!.fields },
    ];
    expect(verify(history(swapped.attempts, swapped.streams, { live: new Map() })).find((r) => r.failed > 0)?.firstFailure).toBe(
      "carbons in a's inbox: a:3 (ok #3) at seq 3 comes before a:1 (ok #2) at seq 5",
    );
  });

  it('catches invented entries: never sent, wrong recipient, altered text, foreign frames', () => {
    const { attempts, streams } = build(SENDS);
    const b = streams.get('b')!;
    for (const fields of [
      ['send', 'a', CMD, 'a:99'],
      ['send', 'b', CMD, 'b:0'], // b:0 went to a, not to b
      ['send', 'a', CMD, 'a:0', 'extra'],
      ['friend', 'added', 'a'],
    ])
      b.push({ seq: b.length + 1, fields });
    const results = verify(history(attempts, streams));
    expect(byName(results, 'invented')).toMatchObject({ failed: 4, firstFailure: "b's inbox seq 5: send,a,chk,a:99 was never sent" });
  });

  it('catches seq gaps, repeats, disorder and a head that does not match', () => {
    const { attempts, streams } = build(SENDS);
    const gap = history(attempts, streams);
    const b = gap.finals.get('b')!;
    const withGap = new Map(gap.finals).set('b', { ...b, entries: b.entries.map((e) => (e.seq >= 2 ? { ...e, seq: e.seq + 1 } : e)), head: b.head + 1 });
    expect(byName(verify({ ...gap, finals: withGap, live: new Map() }), 'dense').firstFailure).toBe('b: entry 2 of the replay has seq 3 (after 1)');
    const short = new Map(gap.finals).set('b', { ...b, head: b.head + 2 });
    expect(byName(verify({ ...gap, finals: short }), 'dense').firstFailure).toBe('b: head 6 but 4 entries replayed');
    const missing = new Map(gap.finals);
    missing.delete('c');
    expect(byName(verify({ ...gap, finals: missing, live: new Map() }), 'dense').firstFailure).toBe('c: the final inbox could not be read');
  });

  it('catches an entry seen live that changed or vanished, a live gap and a stream_reset', () => {
    const { attempts, streams } = build(SENDS);
    const h = history(attempts, streams);
    const live = new Map(h.live);
    live.set('a', [...h.live.get('a')!.slice(0, 2), { seq: 3, fields: ['send', 'b', CMD, 'b:7'], epoch: 'E1' }]);
    live.set('b', [h.live.get('b')![0]!, h.live.get('b')![2]!]);
    live.set(
      'c',
      h.live.get('c')!.map((e) => ({ ...e, epoch: 'E0' })),
    );
    const results = verify({ ...h, live, resets: new Map([['c', ['resume from seq 3 of epoch E0: stream_reset']]]) });
    expect(failing(results)).toEqual([PROPERTIES.kept, PROPERTIES.live]);
    expect(byName(results, 'kept').firstFailure).toBe('a saw seq 3 as send,b,chk,b:7; the final inbox has sent,b,chk,a:1 at seq 3');
    expect(byName(results, 'kept').failed).toBe(1 + 3);
    expect(byName(results, 'live')).toMatchObject({ passed: 1, failed: 2, firstFailure: 'b saw seq 3 after seq 1' });
    const reset = verify({ ...h, resets: new Map([['c', ['resume from seq 3 of epoch E1: stream_reset: past the head']]]) });
    expect(byName(reset, 'live').firstFailure).toBe('c: 1 resume was answered stream_reset (resume from seq 3 of epoch E1: stream_reset: past the head)');
  });
});
