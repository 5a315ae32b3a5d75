/**
 * A server with a WebSocket port and a real Chromium (Debian's, driven by
 * playwright-core; never a downloaded browser) for the browser tests. The
 * tests are skipped with a message when /usr/bin/chromium is missing:
 * `apt-get install -y chromium` enables them (.ci/run does).
 */
import { afterAll, beforeAll, expect } from 'vitest';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { ROOT, removeDir, startServer, tempDir, type TestServer } from '../helpers/server.ts';
import { RawConnection } from '../helpers/raw.ts';
import { PW } from '../helpers/users.ts';
import { freePort } from '../../tools/bench/systems.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const available = existsSync(CHROMIUM);
if (!available) console.warn(`browser tests skipped: no Chromium at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_PATH)`);

const ARTIFACTS = join(ROOT, 'test-artifacts');
let unique = 0;

/** A safety net, not a measure: a browser test does a lot of work, and 2 loaded cores are slow at it. */
export const BROWSER_TEST_TIMEOUT = 60_000;

export type Viewport = { width: number; height: number };

/** Starts the server and the browser around the tests of the calling `describe`. */
export function browserFixture() {
  const contexts: BrowserContext[] = [];
  let browser: Browser;
  const fx = {
    srv: undefined as unknown as TestServer,
    data: '',
    tcpPort: 0,
    wsPort: 0,
    contexts,
    serverArgs: () => ['--port', String(fx.tcpPort), '--ws-port', String(fx.wsPort)],
    async restart(): Promise<void> {
      fx.srv = await startServer(fx.serverArgs(), fx.data);
    },
    async context(viewport: Viewport = { width: 1000, height: 700 }, isMobile = false): Promise<BrowserContext> {
      const context = await browser.newContext({ viewport, isMobile });
      contexts.push(context);
      return context;
    },
    /** A fresh browser context (its own sessionStorage) showing the page. */
    async page(viewport?: Viewport, isMobile?: boolean): Promise<Page> {
      const p = await (await fx.context(viewport, isMobile)).newPage();
      await p.goto(`http://127.0.0.1:${fx.wsPort}/`);
      return p;
    },
    /** A registered, logged-in TCP connection that has joined `room`. */
    async tcpMember(user: string, room: string): Promise<RawConnection> {
      const tcp = await RawConnection.open(fx.tcpPort);
      expect(await tcp.ask('register', user, PW)).toBe('ok');
      expect(await tcp.ask('login', user, PW)).toBe('ok');
      tcp.send('join', room);
      await tcp.nextN(2);
      return tcp;
    },
  };
  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    fx.data = tempDir();
    fx.tcpPort = await freePort();
    fx.wsPort = await freePort();
    await fx.restart();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
  }, 60_000);
  afterAll(async () => {
    for (const c of contexts) await c.close().catch(() => undefined);
    await browser?.close();
    await fx.srv?.stop();
    removeDir(fx.data);
  });
  return fx;
}

/** expect.poll with room for a loaded machine (its default gives up after 1 s). */
export const poll = <T>(fn: () => T | Promise<T>, timeout = 5000) => expect.poll(fn, { timeout });

export const name = (prefix: string) => `${prefix}${++unique}`;

export async function register(p: Page, user: string): Promise<void> {
  await p.fill('#login-user', user);
  await p.fill('#login-password', PW);
  await p.click('#register-button');
  await p.waitForSelector('[data-testid=me]');
}

export async function joinRoom(p: Page, room: string): Promise<void> {
  await p.fill('[data-testid=join-input]', room);
  await p.press('[data-testid=join-input]', 'Enter');
  // attached, not visible: on a phone the menu holding the room list closes once the room is open
  await p.waitForSelector(`[data-testid="room-${room}"][aria-current=page]`, { state: 'attached' });
}

export async function say(p: Page, text: string): Promise<void> {
  await p.fill('#composer-input', text);
  await p.press('#composer-input', 'Enter');
}

export const messages = (p: Page) => p.locator('[data-testid=messages]');
export const shot = (p: Page, file: string) => p.screenshot({ path: join(ARTIFACTS, `${file}.png`) });

/** Uncaught exceptions, unhandled rejections and console errors of a page, from now on. */
export function collectErrors(p: Page): string[] {
  const errors: string[] = [];
  p.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  p.on('console', (m) => m.type() === 'error' && errors.push(`console: ${m.text()}`));
  return errors;
}
