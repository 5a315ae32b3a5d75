/** The browser client in a real Chromium: chat, history, direct messages, presence, reconnects, a phone screen. */
import { describe, expect, it } from 'vitest';
import { RawConnection } from '../helpers/raw.ts';
import { PW } from '../helpers/users.ts';
import { available, BROWSER_TEST_TIMEOUT, browserFixture, joinRoom, messages, name, register, say, shot, poll } from './harness.ts';

describe.skipIf(!available)('browser client', { timeout: BROWSER_TEST_TIMEOUT }, () => {
  const fx = browserFixture();
  const page = () => fx.page();

  it('two browsers register and chat in a room, each seeing the other live', async () => {
    const [a, b] = [name('ann'), name('ben')];
    const pa = await page();
    const pb = await page();
    await register(pa, a);
    await register(pb, b);
    await joinRoom(pa, 'lobby');
    await joinRoom(pb, 'lobby');
    await say(pa, 'hello from ann');
    await poll(() => messages(pb).innerText()).toContain('hello from ann');
    await say(pb, 'hi ann, ben here');
    await poll(() => messages(pa).innerText()).toContain('hi ann, ben here');
    await shot(pa, 'room');
  });

  it('shows a message from a TCP client, and an error for a wrong password', async () => {
    const p = await page();
    const u = name('tcpfan');
    await register(p, u);
    await joinRoom(p, 'mixed');
    const tcp = await RawConnection.open(fx.tcpPort);
    expect(await tcp.ask('register', 'tcp_' + u, PW)).toBe('ok');
    expect(await tcp.ask('login', 'tcp_' + u, PW)).toBe('ok');
    tcp.send('join', 'mixed');
    await tcp.nextN(2);
    tcp.send('say', 'mixed', 'from a dumbconsole, with a comma');
    await poll(() => messages(p).innerText()).toContain('from a dumbconsole, with a comma');
    tcp.close();
    const other = await page();
    await other.fill('#login-user', u);
    await other.fill('#login-password', 'not-the-password');
    await other.click('#login-button');
    await poll(() => other.locator('#error').innerText()).toMatch(/wrong user or password/i);
    await shot(other, 'login-error');
  });

  it('pages backwards through history on scroll', async () => {
    const room = name('long');
    const tcp = await RawConnection.open(fx.tcpPort);
    const writer = 'w_' + room;
    expect(await tcp.ask('register', writer, PW)).toBe('ok');
    expect(await tcp.ask('login', writer, PW)).toBe('ok');
    tcp.send('join', room);
    await tcp.nextN(2);
    for (let i = 1; i <= 120; i++) tcp.send('say', room, `line ${i}`);
    await tcp.nextN(240, 20_000);
    tcp.close();
    const p = await page();
    await register(p, name('reader'));
    await joinRoom(p, room);
    await poll(() => messages(p).innerText()).toContain('line 120');
    expect(await messages(p).innerText()).not.toContain('line 1\n');
    expect(await messages(p).innerText()).not.toContain('line 70');
    await messages(p).evaluate((node) => (node.scrollTop = 0));
    await poll(() => messages(p).innerText()).toContain('line 21\n'); // the page before: 21 to 70
    expect(await messages(p).innerText()).not.toContain('line 20\n');
    await messages(p).evaluate((node) => (node.scrollTop = 0));
    await poll(() => messages(p).innerText()).toContain('line 1\n'); // and the first 20
  });

  it('sends a direct message that arrives as a push, with presence dots and a typing indicator', async () => {
    const [a, b] = [name('dana'), name('eve')];
    const pa = await page();
    const pb = await page();
    await register(pa, a);
    await register(pb, b);
    // friends see each other's presence
    await pa.fill('[data-testid=friend-input]', b);
    await pa.press('[data-testid=friend-input]', 'Enter');
    await pb.click(`[data-testid="accept-${a}"]`);
    await poll(() => pa.locator(`[data-testid="presence-${b}"]`).first().getAttribute('title')).toBe('online');
    await pa.click(`[data-testid="dm-${b}"]`);
    await say(pa, 'a private hello');
    await poll(() => pb.locator(`[data-testid="dm-${a}"]`).count()).toBeGreaterThan(0);
    await pb.locator(`[data-testid="dm-${a}"]`).first().click();
    await poll(() => messages(pb).innerText()).toContain('a private hello');
    const room = name('typing');
    await joinRoom(pa, room);
    await joinRoom(pb, room);
    await pa.fill('#composer-input', 'I am typ');
    await pa.type('#composer-input', 'ing');
    await poll(() => pb.locator('[data-testid=typing]').innerText()).toContain(`${a} is typing`);
    await shot(pb, 'typing');
    await pa.fill('#composer-input', '');
    await pa.type('#composer-input', 'x');
    await pa.press('#composer-input', 'Backspace');
    await poll(() => pb.locator('[data-testid=typing]').innerText()).toBe('');
    await fx.contexts.at(-2)!.close(); // dana goes away
    await poll(() => pb.locator(`[data-testid="presence-${a}"]`).first().getAttribute('title')).toBe('offline');
  });

  it('reconnects after a server restart and fetches what it missed', async () => {
    const u = name('stayer');
    const p = await page();
    await register(p, u);
    const room = name('restart');
    await joinRoom(p, room);
    await say(p, 'before the restart');
    await poll(() => messages(p).innerText()).toContain('before the restart');
    await fx.srv.stop();
    await poll(() => p.locator('[data-testid=connection]').innerText()).toBe('reconnecting…');
    await fx.restart();
    // said before the page is back: it must come from history,after
    const tcp = await RawConnection.open(fx.tcpPort);
    expect(await tcp.ask('register', 'r_' + u, PW)).toBe('ok');
    expect(await tcp.ask('login', 'r_' + u, PW)).toBe('ok');
    tcp.send('join', room);
    await tcp.nextN(2);
    tcp.send('say', room, 'while you were away');
    await tcp.nextN(2);
    tcp.close();
    await poll(() => p.locator('[data-testid=connection]').innerText(), 15_000).toBe('connected');
    await poll(() => messages(p).innerText(), 10_000).toContain('while you were away');
    await shot(p, 'after-restart');
  });

  it('fits a phone screen and works from the keyboard', async () => {
    const p = await fx.page({ width: 375, height: 700 }, true);
    await p.waitForSelector('#login-user:focus'); // the form takes the focus once connected
    await p.keyboard.type(name('phone'));
    await p.keyboard.press('Tab');
    await p.keyboard.type(PW);
    await p.keyboard.press('Tab');
    await p.keyboard.press('Tab');
    await p.keyboard.press('Enter'); // Register
    await p.waitForSelector('[data-testid=me]');
    const width = (await p.evaluate('document.documentElement.scrollWidth')) as number;
    expect(width).toBeLessThanOrEqual(375);
    await p.click('.menu');
    await joinRoom(p, 'lobby');
    await shot(p, 'phone');
  });
});
