/**
 * GATEWAYS.md section 5: after a dropped connection the page fetches "the
 * missed room messages" with `history,after`. All of them: more than one
 * history page (500 rows) may have been said meanwhile, and a live message
 * may arrive on the new socket before the catch-up asks, so "after" must be
 * the last message seen before the drop, not the newest one seen since.
 */
import { describe, expect, it } from 'vitest';
import type { Page, WebSocketRoute } from 'playwright-core';
import { RawConnection } from '../helpers/raw.ts';
import { PW } from '../helpers/users.ts';
import { available, browserFixture, joinRoom, name, poll, register } from './harness.ts';

const MISSED = 520; // more than one history page (the rooms module's 500 rows)

describe.skipIf(!available)('browser client: room catch-up after a dropped connection', { timeout: 180_000 }, () => {
  const fx = browserFixture();

  /**
   * A page whose WebSocket Playwright stands in front of: `drop()` cuts it
   * and refuses new ones until `up()`; `holdResumed` keeps the server's
   * `resumed` reply on the next socket back until `releaseResumed()`, so a
   * live room push reaches the page first.
   */
  async function cuttablePage() {
    const context = await fx.context();
    let down = false;
    let holding = false;
    let held: (() => void) | undefined;
    const live: { page: WebSocketRoute; server: WebSocketRoute }[] = [];
    await context.routeWebSocket(/\/ws$/, (ws) => {
      if (down) return void ws.close();
      const server = ws.connectToServer();
      server.onMessage((message) => {
        // the page's requests go as req,<id>,...: the reply is req,<id>,resumed,...
        if (holding && typeof message === 'string' && /^req,[^,]*,resumed,/.test(message)) {
          held = () => ws.send(message);
          return;
        }
        ws.send(message);
      });
      live.push({ page: ws, server });
    });
    const page: Page = await context.newPage();
    await page.goto(`http://127.0.0.1:${fx.wsPort}/`);
    return {
      page,
      async drop() {
        down = true;
        for (const r of live.splice(0)) {
          await r.server.close();
          await r.page.close();
        }
      },
      up(holdResumed: boolean) {
        holding = holdResumed;
        down = false;
      },
      /** Resolves once the new socket's `resumed` is held: it is logged in (token) and live pushes reach it. */
      async resumedHeld() {
        await poll(() => held !== undefined, 15_000).toBe(true);
      },
      releaseResumed() {
        holding = false;
        held!();
      },
    };
  }

  const texts = (p: Page) => p.locator('[data-testid=messages] li:not(.system) p').allTextContents();

  /** A browser page (its link cuttable) in `room`, and a TCP talker there whose `before` the page shows. */
  async function readerAndTalker(room: string) {
    const cuttable = await cuttablePage();
    await register(cuttable.page, name('reader'));
    await joinRoom(cuttable.page, room);
    const tcp = await RawConnection.open(fx.tcpPort);
    const talker = name('talker');
    expect(await tcp.ask('register', talker, PW)).toBe('ok');
    expect(await tcp.ask('login', talker, PW)).toBe('ok');
    tcp.send('join', room);
    await tcp.nextN(2);
    tcp.send('say', room, 'before');
    await tcp.nextN(2);
    await poll(() => texts(cuttable.page)).toEqual(['before']);
    return { ...cuttable, tcp };
  }

  it('shows every message said while it was away, over more than one page, even when a live one arrives first', async () => {
    const room = name('busy');
    const { page, drop, up, resumedHeld, releaseResumed, tcp } = await readerAndTalker(room);

    await drop();
    await poll(() => page.locator('[data-testid=connection]').innerText()).toBe('reconnecting…');
    for (let i = 0; i < MISSED; i++) tcp.send('say', room, `missed ${i}`);
    await tcp.waitFrames(2 * MISSED, 30_000);

    up(true);
    // the new socket is logged in (its token) and a live message reaches it before the catch-up starts
    await resumedHeld();
    tcp.send('say', room, 'live');
    await tcp.nextN(2);
    await poll(async () => (await texts(page)).includes('live'), 15_000).toBe(true);
    releaseResumed();

    const expected = ['before', ...Array.from({ length: MISSED }, (_, i) => `missed ${i}`), 'live'];
    await poll(() => texts(page), 15_000).toEqual(expected);
    tcp.close();
  });

  it('after a very long absence shows the newest page with no gap, older ones loading on scrolling up', async () => {
    const room = name('flood');
    const { page, drop, up, tcp } = await readerAndTalker(room);

    await drop();
    await poll(() => page.locator('[data-testid=connection]').innerText()).toBe('reconnecting…');
    const flood = 2100; // past the catch-up's 4 pages of 500
    for (let i = 0; i < flood; i++) tcp.send('say', room, `missed ${i}`);
    await tcp.waitFrames(2 * flood, 60_000);
    up(false);
    // the newest 50, as after a reload: not `before` and then a jump
    const newest = Array.from({ length: 50 }, (_, i) => `missed ${flood - 50 + i}`);
    await poll(() => texts(page), 20_000).toEqual(newest);
    tcp.close();
  });
});
