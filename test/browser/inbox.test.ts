/**
 * The browser client as an inbox client (DELIVERY.md): direct messages,
 * sent from any device and received, each shown exactly once and in order
 * across reloads, closed pages, server restarts and a stream_reset.
 */
import { describe, expect, it } from 'vitest';
import type { Page, WebSocketRoute } from 'playwright-core';
import { RawConnection } from '../helpers/raw.ts';
import { PW } from '../helpers/users.ts';
import { available, browserFixture, collectErrors, name, poll, register, say } from './harness.ts';

const TIMEOUT = 180_000;
const SETTLE = 15_000;

describe.skipIf(!available)('browser client: direct messages from the inbox', { timeout: TIMEOUT }, () => {
  const fx = browserFixture();
  const url = () => `http://127.0.0.1:${fx.wsPort}/`;

  /** Another device of an existing user: a fresh browser context (its own sessionStorage) logged in with the form. */
  async function device(user: string): Promise<Page> {
    const p = await fx.page();
    await p.fill('#login-user', user);
    await p.fill('#login-password', PW);
    await p.click('#login-button');
    await p.waitForSelector('[data-testid=me]');
    return p;
  }

  /**
   * A page whose WebSocket can be cut while the HTTP gateway stays up:
   * Playwright stands between the page and the server. `drop()` closes the
   * sockets and refuses new ones until `up()`.
   */
  async function cuttablePage(): Promise<{ page: Page; drop(): Promise<void>; up(): void }> {
    const context = await fx.context();
    let down = false;
    const live: { page: WebSocketRoute; server: WebSocketRoute }[] = [];
    await context.routeWebSocket(/\/ws$/, (ws) => {
      if (down) return void ws.close();
      live.push({ page: ws, server: ws.connectToServer() });
    });
    const page = await context.newPage();
    await page.goto(url());
    return {
      page,
      async drop() {
        down = true;
        for (const r of live.splice(0)) {
          await r.server.close();
          await r.page.close();
        }
      },
      up: () => void (down = false),
    };
  }

  async function openDm(p: Page, peer: string): Promise<void> {
    await p.fill('[data-testid=dm-input]', peer);
    await p.press('[data-testid=dm-input]', 'Enter');
    await p.waitForSelector(`[data-view="dm:${peer.toLowerCase()}"]`);
  }

  /** Sends a direct message from the open conversation and waits for its answer (the pending line is gone). */
  async function dm(p: Page, text: string): Promise<void> {
    await say(p, text);
    await poll(() => shown(p), SETTLE).toContain(`${await me(p)}: ${text}`);
    await poll(() => p.locator('[data-pending]').count(), SETTLE).toBe(0);
  }

  /** `send` from a version 1 TCP connection: its answer, past the pushes of what it is sent meanwhile. */
  async function tcpSend(tcp: RawConnection, to: string, text: string): Promise<void> {
    tcp.send('send', to, 'msg', text);
    let frame = await tcp.next();
    while (frame.startsWith('send,')) frame = await tcp.next();
    expect(frame).toBe('ok');
  }

  const me = (p: Page) => p.locator('[data-testid=me]').innerText();

  /** The open conversation as `who: text` lines, pending sends and notes left out. */
  const shown = (p: Page) =>
    p
      .locator('[data-testid=messages] li:not([data-pending]):not(.system)')
      .evaluateAll((items) => items.map((li) => `${li.querySelector('.who')?.textContent}: ${li.querySelector('p')?.textContent}`));

  /**
   * Waits until the open conversation with `peer` is exactly `expected`.
   * Entries are applied in seq order, so once the newest shows, everything
   * before it was applied: a doubled one would sit in the list for good.
   */
  async function expectConversation(p: Page, peer: string, expected: string[]): Promise<void> {
    await p.waitForSelector(`[data-view="dm:${peer.toLowerCase()}"]`, { state: 'attached', timeout: SETTLE });
    await poll(() => shown(p), SETTLE).toEqual(expected);
  }

  async function reload(p: Page): Promise<void> {
    await p.reload();
    await p.waitForSelector('[data-testid=me]', { timeout: SETTLE });
  }

  it('shows every message of two devices and a peer exactly once, in order, across reloads', async () => {
    const [alice, bob] = [name('alice'), name('bob')];
    const phone = await fx.page();
    const errors = collectErrors(phone);
    await register(phone, alice);
    const pb = await fx.page();
    await register(pb, bob);
    const laptop = await device(alice);
    await openDm(phone, bob);
    await openDm(laptop, bob);
    await openDm(pb, alice);

    await dm(phone, 'hi bob, from my phone');
    await dm(pb, 'hi alice');
    await dm(laptop, 'and from my laptop, with a comma');
    await dm(pb, 'got both');
    const aliceView = [`${alice}: hi bob, from my phone`, `${bob}: hi alice`, `${alice}: and from my laptop, with a comma`, `${bob}: got both`];
    for (const p of [phone, laptop]) await expectConversation(p, bob, aliceView);
    await expectConversation(pb, alice, aliceView);

    for (let round = 1; round <= 3; round++) {
      for (const p of [phone, laptop, pb]) await reload(p);
      // the open conversation comes back with the reload
      for (const p of [phone, laptop]) await expectConversation(p, bob, aliceView);
      await expectConversation(pb, alice, aliceView);
      const sender = round % 2 === 1 ? laptop : phone;
      await dm(sender, `round ${round}`);
      aliceView.push(`${alice}: round ${round}`);
      for (const p of [phone, laptop]) await expectConversation(p, bob, aliceView);
      await expectConversation(pb, alice, aliceView);
    }
    expect(errors).toEqual([]);
  });

  it('shows what arrived while the page was closed, and a new device reads the retained history', async () => {
    const [alice, bob] = [name('alice'), name('bob')];
    const pa = await fx.page();
    await register(pa, alice);
    const tcp = await RawConnection.open(fx.tcpPort);
    expect(await tcp.ask('register', bob, PW)).toBe('ok');
    expect(await tcp.ask('login', bob, PW)).toBe('ok');
    await tcpSend(tcp, alice, 'one');
    await poll(() => pa.locator(`[data-testid="dm-${bob}"]`).count()).toBeGreaterThan(0);
    await pa.locator(`[data-testid="dm-${bob}"]`).first().click();
    await expectConversation(pa, bob, [`${bob}: one`]);
    await dm(pa, 'two');

    await pa.goto('about:blank'); // the page is closed; the tab keeps its sessionStorage
    for (const text of ['three', 'four, while you were away']) {
      await tcpSend(tcp, alice, text);
    }
    await pa.goto(url());
    await pa.waitForSelector('[data-testid=me]');
    const expected = [`${bob}: one`, `${alice}: two`, `${bob}: three`, `${bob}: four, while you were away`];
    await expectConversation(pa, bob, expected);
    // the missed ones count as unread elsewhere; here they are in view
    await reload(pa);
    await expectConversation(pa, bob, expected);

    const fresh = await device(alice); // a new tab: a new device, everything retained
    await fresh.locator(`[data-testid="dm-${bob}"]`).first().click();
    await expectConversation(fresh, bob, expected);
    tcp.close();
  });

  it('keeps every message once across server restarts, sends typed while disconnected, and reloads while one is pending', async () => {
    const [alice, bob] = [name('alice'), name('bob')];
    const pa = await fx.page();
    await register(pa, alice);
    const pb = await fx.page();
    await register(pb, bob);
    await openDm(pa, bob);
    await openDm(pb, alice);
    await dm(pa, 'before');
    await dm(pb, 'before, too');
    const expected = [`${alice}: before`, `${bob}: before, too`];

    await fx.srv.stop();
    await poll(() => pa.locator('[data-testid=connection]').innerText()).toBe('reconnecting…');
    await say(pa, 'typed while down'); // pending until the server is back, then sent once
    await poll(() => pa.locator('[data-pending]').count()).toBe(1);
    await fx.restart();
    expected.push(`${alice}: typed while down`);
    await poll(() => pa.locator('[data-pending]').count(), SETTLE).toBe(0);
    await expectConversation(pa, bob, expected);
    await expectConversation(pb, alice, expected);
    await dm(pb, 'after the restart');
    expected.push(`${bob}: after the restart`);
    await expectConversation(pa, bob, expected);

    for (const p of [pa, pb]) await reload(p);
    await expectConversation(pa, bob, expected);
    await expectConversation(pb, alice, expected);
  });

  it('keeps every message once when the WebSocket is cut, and resends a pending message after a reload', async () => {
    const [alice, bob] = [name('alice'), name('bob')];
    const { page: pa, drop, up } = await cuttablePage();
    const errors = collectErrors(pa);
    await register(pa, alice);
    const pb = await fx.page();
    await register(pb, bob);
    await openDm(pa, bob);
    await openDm(pb, alice);
    await dm(pa, 'hello');
    const expected = [`${alice}: hello`];

    await drop();
    await poll(() => pa.locator('[data-testid=connection]').innerText()).toBe('reconnecting…');
    await dm(pb, 'while your socket was cut');
    expected.push(`${bob}: while your socket was cut`);
    await say(pa, 'typed while cut');
    await poll(() => pa.locator('[data-pending]').count()).toBe(1);
    up();
    expected.push(`${alice}: typed while cut`);
    await expectConversation(pa, bob, expected);
    await expectConversation(pb, alice, expected);

    // a reload while a send is pending: the stored send goes again under its key, once
    await drop();
    await poll(() => pa.locator('[data-testid=connection]').innerText()).toBe('reconnecting…');
    await say(pa, 'pending over a reload');
    await poll(() => pa.locator('[data-pending]').count()).toBe(1);
    await pa.reload(); // the page comes back; its socket waits
    await dm(pb, 'while you reloaded');
    up();
    await pa.waitForSelector('[data-testid=me]', { timeout: SETTLE });
    expected.push(`${bob}: while you reloaded`, `${alice}: pending over a reload`);
    await expectConversation(pa, bob, expected);
    await expectConversation(pb, alice, expected);
    for (let i = 0; i < 3; i++) {
      await drop();
      up();
      await poll(() => pa.locator('[data-testid=connection]').innerText(), SETTLE).toBe('connected');
      await reload(pa);
      await expectConversation(pa, bob, expected);
    }
    await dm(pa, 'last');
    expected.push(`${alice}: last`);
    await expectConversation(pa, bob, expected);
    await expectConversation(pb, alice, expected);
    expect(errors.filter((e) => !/WebSocket/.test(e))).toEqual([]);
  });

  it('rebuilds the conversations from the inbox when the stored position cannot be resumed (stream_reset)', async () => {
    const [alice, bob] = [name('alice'), name('bob')];
    const pa = await fx.page();
    await register(pa, alice);
    const pb = await fx.page();
    await register(pb, bob);
    await openDm(pa, bob);
    await openDm(pb, alice);
    await dm(pa, 'first');
    await dm(pb, 'second');
    const expected = [`${alice}: first`, `${bob}: second`];
    await expectConversation(pa, bob, expected);
    const key = `textserver-inbox:${alice.toLowerCase()}`;
    const stored = () => pa.evaluate((k) => JSON.parse(sessionStorage.getItem(k)!).position as { epoch: string; seq: number }, key);
    // the page writes its snapshot as it goes away: the change is made in the next document, before the app runs
    await pa.addInitScript(() => {
      const change = sessionStorage.getItem('test-change');
      if (change === null) return;
      sessionStorage.removeItem('test-change');
      const { key, position } = JSON.parse(change);
      const saved = JSON.parse(sessionStorage.getItem(key)!);
      saved.position = { ...saved.position, ...position };
      sessionStorage.setItem(key, JSON.stringify(saved));
    });
    await poll(stored).toEqual({ epoch: expect.stringMatching(/^[A-Za-z0-9]{8,16}$/), seq: 2 });
    const { epoch } = await stored();
    for (const position of [{ epoch: 'notTheEpoch1' }, { seq: 1_000_000 }]) {
      // another epoch (a restored server), then a seq past the head: both answer stream_reset
      await pa.evaluate(([k, p]) => sessionStorage.setItem('test-change', JSON.stringify({ key: k, position: p })), [key, position] as const);
      await reload(pa);
      await expectConversation(pa, bob, expected);
      await poll(stored).toEqual({ epoch, seq: 2 }); // read again from seq 1, in the server's epoch
    }
    await dm(pb, 'third');
    expected.push(`${bob}: third`);
    await expectConversation(pa, bob, expected);
  });
});
