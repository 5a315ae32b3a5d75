/**
 * The Hub with sessions on fake Links and a real SQLite inbox: who is
 * online, pushes formatted once and written once per connection, delivery
 * to online users, storage for offline ones, and the mailbox drain.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalBroker, LocalBus } from '../../src/bus/local-bus.ts';
import { ClusterLink } from '../../src/core/cluster-link.ts';
import { Hub } from '../../src/core/hub.ts';
import type { UserRef } from '../../src/core/module-api.ts';
import { createLogger } from '../../src/log.ts';
import { CoreData } from '../../src/store/core-data.ts';
import { InboxData } from '../../src/store/inbox-data.ts';
import { testCore, type TestCore } from '../helpers/core.ts';
import { eventually } from '../helpers/eventually.ts';

let t: TestCore;
let data: CoreData;
let inbox: InboxData;
let hub: Hub;
const MAILBOX = 3;
/** What the hub told its listeners (the module hooks in a server), in order. */
const events: string[] = [];
let unique = 0;

beforeAll(async () => {
  t = await testCore();
  data = new CoreData(t.store);
  inbox = new InboxData(t.store);
  const settings = { mailboxSize: () => MAILBOX, window: () => 64, retain: () => 10000, maxAgeMs: () => 86_400_000, replyWaitMs: () => 1000 };
  hub = new Hub(inbox, createLogger('silent'), settings, {
    online: (u) => events.push(`online ${u.name}`),
    offline: (u) => events.push(`offline ${u.name}`),
    login: (s, u) => events.push(`login ${u.name} ${s.id}`),
    logout: (s, u) => events.push(`logout ${u.name} ${s.id}`),
  });
});

afterAll(async () => {
  await t.close();
});

async function user(): Promise<UserRef> {
  const name = `hub${++unique}`;
  const row = await data.createUser(name, name, 'not a hash');
  return { id: row!.id, name };
}

describe('hub: who is online', () => {
  it('is online from the first attached session to the last detached one', async () => {
    const ann = await user();
    const a = t.open().session;
    const b = t.open().session;
    events.length = 0;
    hub.attach(a, ann);
    hub.attach(b, ann);
    hub.attach(b, ann); // the same again changes nothing
    expect(hub.isOnline(ann.id)).toBe(true);
    expect(hub.sessionsOf(ann.id)).toEqual([a, b]);
    hub.detach(a);
    expect(hub.isOnline(ann.id)).toBe(true);
    hub.detach(b);
    hub.detach(b);
    expect(hub.isOnline(ann.id)).toBe(false);
    expect(hub.sessionsOf(ann.id)).toEqual([]);
    expect(events).toEqual([
      `login ${ann.name} ${a.id}`,
      `online ${ann.name}`,
      `login ${ann.name} ${b.id}`,
      `logout ${ann.name} ${a.id}`,
      `logout ${ann.name} ${b.id}`,
      `offline ${ann.name}`,
    ]);
    expect(a.user).toBeNull();
  });

  it('attaching a session as someone else logs it out as the first user', async () => {
    const [ann, bob] = [await user(), await user()];
    const s = t.open().session;
    events.length = 0;
    hub.attach(s, ann);
    hub.attach(s, bob);
    expect(events).toEqual([
      `login ${ann.name} ${s.id}`,
      `online ${ann.name}`,
      `logout ${ann.name} ${s.id}`,
      `offline ${ann.name}`,
      `login ${bob.name} ${s.id}`,
      `online ${bob.name}`,
    ]);
    hub.logout(s);
    expect(hub.isOnline(bob.id)).toBe(false);
    expect(s.user).toBeNull();
  });
});

describe('hub: pushes', () => {
  it('pushToUsers formats one frame and writes it once to every connection of each online user', async () => {
    const [ann, bob, cid] = [await user(), await user(), await user()];
    const a1 = t.open();
    const a2 = t.open();
    const b1 = t.open();
    hub.attach(a1.session, ann);
    hub.attach(a2.session, ann);
    hub.attach(b1.session, bob);
    const before = hub.stats.pushed;
    expect(hub.pushToUsers(new Set([ann.id, bob.id, cid.id]), ['room', 'r', 'msg'])).toBe(3);
    for (const c of [a1, a2, b1]) expect(c.link.frames).toEqual(['room,r,msg']);
    expect(a2.link.written[0]).toBe(a1.link.written[0]); // the very same frame
    expect(b1.link.written[0]).toBe(a1.link.written[0]);
    expect(hub.stats.pushed).toBe(before + 3);
    expect(hub.pushToUser(cid.id, ['x'])).toBe(0);
    for (const c of [a1, a2, b1]) hub.detach(c.session);
  });

  it('deliver pushes to an online user and stores for an offline one, past the mailbox size (only send answers mailbox_full)', async () => {
    const [ann, bob] = [await user(), await user()];
    const a1 = t.open();
    const a2 = t.open();
    hub.attach(a1.session, ann);
    hub.attach(a2.session, ann);
    expect(await hub.deliver(ann, ['send', 'x', 'hi'])).toBe('pushed');
    expect([a1.link.frames, a2.link.frames]).toEqual([['send,x,hi'], ['send,x,hi']]);
    expect(await inbox.pendingCount(ann.id)).toBe(0);
    for (let i = 0; i <= MAILBOX; i++) expect(await hub.deliver(bob, ['send', 'x', String(i)])).toBe('stored');
    expect(await inbox.pendingCount(bob.id)).toBe(MAILBOX + 1);
    hub.detach(a1.session);
    hub.detach(a2.session);
  });

  it('stores a delivered push whose every write failed (the connections died under it)', async () => {
    const ann = await user();
    const a = t.open();
    a.link.holding = true;
    hub.attach(a.session, ann);
    expect(await hub.deliver(ann, ['send', 'x', 'lost?'])).toBe('pushed');
    expect(await inbox.pendingCount(ann.id)).toBe(0);
    a.link.take(new Error('connection reset'));
    await eventually(async () => expect(await inbox.pendingCount(ann.id)).toBe(1));
    hub.detach(a.session);
  });
});

describe('hub: mailbox drain', () => {
  it('pushes stored messages oldest first after attach, and deletes them once written', async () => {
    const bob = await user();
    for (const text of ['one', 'two', 'three']) await hub.deliver(bob, ['send', 'x', text]);
    const b = t.open();
    b.link.holding = true;
    hub.attach(b.session, bob);
    await eventually(() => expect(b.link.frames).toEqual(['send,x,one', 'send,x,two', 'send,x,three']));
    expect(await inbox.pendingCount(bob.id)).toBe(3); // not written yet: kept
    b.link.take();
    await eventually(async () => expect(await inbox.pendingCount(bob.id)).toBe(0));
    hub.detach(b.session);
  });
});

describe('hub: two nodes on a local broker (the cluster paths without Redis)', () => {
  it('holds a user channel while the user has connections here, and delivers pushes and inbox entries from the other node', async () => {
    const broker = new LocalBroker();
    const settings = { mailboxSize: () => MAILBOX, window: () => 64, retain: () => 10000, maxAgeMs: () => 86_400_000, replyWaitMs: () => 1000 };
    const log = createLogger('silent');
    const none = { online() {}, offline() {}, login() {}, logout() {} };
    const node = (id: string) => {
      const bus = new LocalBus(id, broker);
      const link = new ClusterLink(bus, undefined, (fn) => t.store.afterCommit(fn), log);
      return { bus, hub: new Hub(inbox, log, settings, none, { link, userById: async () => null }) };
    };
    const [one, two] = [node('one'), node('two')];
    const [ann, bob] = [await user(), await user()];
    const b = t.open();
    await two.hub.prepareLogin(bob.id);
    two.hub.attach(b.session, bob);
    two.hub.releaseLogin(bob.id);
    expect(two.bus.channels).toBe(1);
    one.hub.pushToUsers([bob.id], ['presence', ann.name, 'online']);
    await eventually(() => expect(b.link.frames).toEqual([`presence,${ann.name},online`]));
    // an entry appended on node one reaches bob's version 1 connection on node two (stored as not yet received there: a drain writes it)
    expect(await one.hub.deliver(bob, ['friend', 'request', ann.name])).toBe('stored');
    await eventually(() => expect(b.link.frames.at(-1)).toBe(`friend,request,${ann.name}`));
    two.hub.detach(b.session);
    expect(two.bus.channels).toBe(0);
  });
});
