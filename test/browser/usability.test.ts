/**
 * The browser client as a person uses it (issue 12): typing shown again
 * after a message, reading history while messages arrive, logging in and
 * out, errors in the banner, and the keyboard on a phone-sized screen.
 */
import { describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { RawConnection } from '../helpers/raw.ts';
import { PW } from '../helpers/users.ts';
import { available, BROWSER_TEST_TIMEOUT, browserFixture, collectErrors, joinRoom, messages, name, register, say, shot, poll } from './harness.ts';

/** What has the keyboard focus: `sidebar:<what>` for anything inside the sidebar. */
const focused = (p: Page) =>
  p.evaluate(`(() => {
    const a = document.activeElement;
    const what = a === null ? 'none' : (a.getAttribute('data-testid') ?? a.id) || a.tagName + ':' + a.textContent;
    return a?.closest('.sidebar') ? 'sidebar:' + what : what;
  })()`) as Promise<string>;
const stored = (p: Page) => p.evaluate('sessionStorage.length') as Promise<number>;
const token = (p: Page) => p.evaluate(`sessionStorage.getItem('textserver-token')`) as Promise<string | null>;

/** The Tab stops of the page, in order, for `count` presses. */
async function tabStops(p: Page, count: number): Promise<string[]> {
  const stops: string[] = [];
  for (let i = 0; i < count; i++) {
    await p.keyboard.press('Tab');
    stops.push(await focused(p));
  }
  return stops;
}

describe.skipIf(!available)('browser client, usability', { timeout: BROWSER_TEST_TIMEOUT }, () => {
  const fx = browserFixture();

  it('shows typing again when the user types after sending a message', async () => {
    const [a, b] = [name('tina'), name('tom')];
    const pa = await fx.page();
    const pb = await fx.page();
    await register(pa, a);
    await register(pb, b);
    const room = name('chatty');
    await joinRoom(pa, room);
    await joinRoom(pb, room);
    const typing = pb.locator('[data-testid=typing]');
    for (const text of ['first message', 'second message']) {
      await pa.type('#composer-input', text.slice(0, 5));
      await poll(() => typing.innerText()).toBe(`${a} is typing…`);
      await pa.type('#composer-input', text.slice(5));
      await pa.press('#composer-input', 'Enter');
      await poll(() => messages(pb).innerText()).toContain(text);
      expect(await typing.innerText()).toBe(''); // the message ends the typing
    }
  });

  it('keeps the reading position when messages arrive, with a marker that scrolls down', async () => {
    const room = name('reading');
    const tcp = await fx.tcpMember(`w_${room}`, room);
    for (let i = 1; i <= 60; i++) tcp.send('say', room, `line ${i}`);
    await tcp.nextN(120, 20_000);
    const p = await fx.page();
    const errors = collectErrors(p);
    await register(p, name('reader'));
    await joinRoom(p, room);
    const list = messages(p);
    await poll(() => list.innerText()).toContain('line 60');
    const geometry = () => list.evaluate((n) => ({ top: n.scrollTop, bottom: n.scrollHeight - n.clientHeight }));
    const atBottom = async () => {
      const g = await geometry();
      return g.bottom > 0 && g.top >= g.bottom - 2;
    };
    const marker = p.locator('[data-testid=new-messages]');
    const live = async (text: string) => {
      tcp.send('say', room, text);
      await tcp.nextN(2);
      await poll(() => list.innerText()).toContain(text);
    };

    // at the bottom, new messages keep the list at the bottom, with no marker
    expect(await atBottom()).toBe(true);
    await live('live 1');
    expect(await atBottom()).toBe(true);
    expect(await marker.isVisible()).toBe(false);

    // reading further up: messages and other updates leave the list where it is
    await list.evaluate((n) => (n.scrollTop = 300));
    await live('live 2');
    const other = await fx.tcpMember(`o_${room}`, room); // a join and a presence update too
    await poll(() => list.innerText()).toContain(`o_${room} joined`);
    await live('live 3');
    expect((await geometry()).top).toBe(300);
    await poll(() => marker.isVisible()).toBe(true);
    expect(await marker.innerText()).toMatch(/new messages/i);
    await shot(p, 'new-messages');

    // the marker scrolls down and goes away
    await marker.click();
    await poll(atBottom).toBe(true);
    await poll(() => marker.isVisible()).toBe(false);
    await live('live 4');
    expect(await atBottom()).toBe(true);

    // scrolling down by hand also clears it
    await list.evaluate((n) => (n.scrollTop = 300));
    await live('live 5');
    await poll(() => marker.isVisible()).toBe(true);
    await list.evaluate((n) => (n.scrollTop = n.scrollHeight));
    await poll(() => marker.isVisible()).toBe(false);
    expect(errors).toEqual([]);
    tcp.close();
    other.close();
  });

  it('shows a wrong password once, focuses the message input after login, and logs out', async () => {
    const u = name('leaver');
    const room = name('door');
    const p = await fx.page();
    const errors = collectErrors(p);
    await register(p, u);
    await joinRoom(p, room);
    const watcher = await RawConnection.open(fx.tcpPort);
    expect(await watcher.ask('register', `watch_${u}`, PW)).toBe('ok');
    expect(await watcher.ask('login', `watch_${u}`, PW)).toBe('ok');
    expect(await watcher.ask('presence', u)).toBe(`presence,${u},online`);
    const before = await token(p);
    expect(before).not.toBeNull();

    await p.click('[data-testid=logout]');
    await p.waitForSelector('#login-user:focus');
    expect(await stored(p)).toBe(0); // forgotten here
    expect(await watcher.ask('token', before!)).toMatch(/^error,nonfatal,wrong_user_or_password/); // and by the server
    await poll(() => watcher.ask('presence', u)).toMatch(new RegExp(`^presence,${u},offline,`)); // the connection closed
    await p.reload();
    await p.waitForSelector('#login-user:focus'); // no way back in without the password

    await p.fill('#login-user', u);
    await p.fill('#login-password', 'not-the-password');
    await p.press('#login-password', 'Enter');
    await poll(() => p.locator('#error').isVisible()).toBe(true);
    expect(await p.locator('#error').innerText()).toBe('wrong user or password');
    await p.fill('#login-password', PW);
    await p.press('#login-password', 'Enter');
    await p.waitForSelector('#composer-input:focus');
    expect(await p.locator('[data-testid=me]').innerText()).toBe(u);
    expect(await p.locator('#error').isVisible()).toBe(false);
    await say(p, 'back again');
    await poll(() => messages(p).innerText()).toContain('back again');
    expect(errors.filter((e) => !e.includes('401'))).toEqual([]); // the browser logs the refused login itself
    watcher.close();
  });

  it('reports failed sidebar forms in the banner without uncaught errors', async () => {
    const p = await fx.page();
    const errors = collectErrors(p);
    await register(p, name('oops'));
    const banner = p.locator('#error');
    await p.fill('[data-testid=join-input]', 'no spaces');
    await p.press('[data-testid=join-input]', 'Enter');
    await poll(() => banner.innerText()).toMatch(/^invalid room: room names are/);
    expect(await p.inputValue('[data-testid=join-input]')).toBe('no spaces'); // kept, to be corrected
    await p.fill('[data-testid=friend-input]', 'nobody-at-all');
    await p.press('[data-testid=friend-input]', 'Enter');
    await poll(() => banner.innerText()).toMatch(/^user not found/);
    await p.fill('[data-testid=dm-input]', 'nobody-else');
    await p.press('[data-testid=dm-input]', 'Enter');
    await poll(() => banner.innerText()).toMatch(/^user not found: .*nobody-else/);
    const room = name('fixed');
    await joinRoom(p, room);
    await poll(() => p.inputValue('[data-testid=join-input]')).toBe(''); // cleared once it worked
    await p.evaluate(() => new Promise((r) => setTimeout(r, 0))); // any unhandled rejection has been reported by now
    expect(errors).toEqual([]);
  });

  it('on a phone, the closed menu takes no Tab stops; the menu opens and closes from the keyboard', async () => {
    const p = await fx.page({ width: 375, height: 700 }, true);
    await register(p, name('thumb'));
    const room = name('pocket');
    expect((await tabStops(p, 8)).filter((s) => s.startsWith('sidebar:'))).toEqual([]);
    await p.focus('.menu');
    await p.keyboard.press('Enter');
    expect(await p.locator('.menu').getAttribute('aria-expanded')).toBe('true');
    expect(await focused(p)).toMatch(/^sidebar:/); // the focus moves into the opened menu
    await shot(p, 'phone-menu');
    await p.keyboard.press('Escape');
    expect(await focused(p)).not.toMatch(/^sidebar:/);
    expect(await p.locator('.sidebar').isVisible()).toBe(false);
    expect(await p.locator('.menu').getAttribute('aria-expanded')).toBe('false');
    await p.keyboard.press('Enter'); // the focus went back to the menu button
    await p.keyboard.type(room);
    await p.keyboard.press('Enter');
    await p.waitForSelector('#composer-input:focus'); // joined: the menu closes, the room is open
    expect(await p.locator('.sidebar').isVisible()).toBe(false);
    expect((await tabStops(p, 10)).filter((s) => s.startsWith('sidebar:'))).toEqual([]);
    await shot(p, 'phone-room');
  });
});
