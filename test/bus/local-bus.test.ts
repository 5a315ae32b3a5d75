/** The in-process bus: alone it reaches nobody; buses sharing a broker behave as nodes of one cluster. */
import { describe, expect, it } from 'vitest';
import { decodeMessage, encodeMessage, parseChannel, roomChannel, userChannel, type Delivered } from '../../src/bus/bus.ts';
import { LocalBroker, LocalBus } from '../../src/bus/local-bus.ts';
import { eventually } from '../helpers/eventually.ts';

describe('LocalBus', () => {
  it('alone: publishing reaches nobody and costs a counter', async () => {
    const bus = new LocalBus('solo');
    const got: Delivered[] = [];
    bus.onMessage((_c, m) => got.push(m));
    await bus.subscribe(userChannel(1));
    bus.publish(userChannel(1), { kind: 'send' });
    await Promise.resolve();
    expect(got).toEqual([]);
    expect(bus.stats.published).toBe(1);
    expect(bus.up).toBe(true);
  });

  it('with a broker: delivers to the other subscribed buses, never back, and counts subscriptions', async () => {
    const broker = new LocalBroker();
    const a = new LocalBus('a', broker);
    const b = new LocalBus('b', broker);
    const got: [string, Delivered][] = [];
    b.onMessage((c, m) => got.push([c, m]));
    const mine: Delivered[] = [];
    a.onMessage((_c, m) => mine.push(m));
    const ch = roomChannel('lobby');
    await a.subscribe(ch);
    await b.subscribe(ch);
    await b.subscribe(ch);
    await b.unsubscribe(ch);
    a.publish(ch, { kind: 'say', fields: { text: 'x' } });
    await eventually(() => expect(got).toEqual([[ch, { origin: 'a', kind: 'say', fields: { text: 'x' } }]]));
    await b.unsubscribe(ch);
    expect(b.channels).toBe(0);
    a.publish(ch, { kind: 'after' });
    await new Promise((r) => setImmediate(r));
    expect(got).toHaveLength(1);
    expect(mine).toEqual([]);
  });
});

describe('channel names', () => {
  it('give back the user or the room they are for', () => {
    expect(parseChannel(userChannel(42))).toEqual({ user: 42 });
    expect(parseChannel(roomChannel('Lobby:1'))).toEqual({ room: 'Lobby:1' });
    for (const other of ['ts:u:', 'ts:u:x', 'ts:r:', 'ts:presence', 'ts:cluster']) expect(parseChannel(other)).toBeUndefined();
  });
});

describe('the wire format', () => {
  it('round-trips, leaves out what is absent, and refuses what is not a message', () => {
    const text = encodeMessage('n1', { kind: 'k', fields: { a: 1 }, seq: 3 });
    expect(JSON.parse(text)).toEqual({ o: 'n1', k: 'k', f: { a: 1 }, s: 3 });
    expect(decodeMessage(text)).toEqual({ origin: 'n1', kind: 'k', fields: { a: 1 }, seq: 3 });
    expect(encodeMessage('n1', { kind: 'k' })).toBe('{"o":"n1","k":"k"}');
    for (const bad of ['', 'null', '[]', '{"o":"x"}', '{"o":"x","k":"y","f":[]}', '{"o":"x","k":"y","s":1.5}']) expect(decodeMessage(bad)).toBeUndefined();
  });
});
