/**
 * GATEWAYS.md section 5, "clear errors": what the page says when the
 * server it was loaded from has stopped. The browser's own words for a
 * failed fetch ("Failed to fetch", "Load failed", "NetworkError when...")
 * and a bare "not connected" tell a person nothing about what to do.
 */
import { describe, expect, it } from 'vitest';
import { available, BROWSER_TEST_TIMEOUT, browserFixture, name, poll } from './harness.ts';
import { PW } from '../helpers/users.ts';

describe.skipIf(!available)('browser client, server down', { timeout: BROWSER_TEST_TIMEOUT }, () => {
  const fx = browserFixture();

  it('says the server cannot be reached when logging in or registering while it is down, and logs in once it is back', async () => {
    const user = name('downy');
    const p = await fx.page();
    await p.waitForSelector('#login-button');
    await fx.srv.stop();
    const banner = p.locator('#error');

    await p.fill('#login-user', user);
    await p.fill('#login-password', PW);
    await p.click('#login-button');
    await poll(() => banner.isVisible()).toBe(true);
    expect(await banner.innerText()).toMatch(/^cannot reach the server/);

    await p.click('#register-button');
    await poll(() => banner.innerText()).toMatch(/^cannot reach the server/);

    await fx.restart();
    // the page reconnects by itself; until it has, a try says the same again
    await poll(async () => {
      if ((await p.locator('[data-testid=me]').count()) === 0) await p.click('#register-button', { timeout: 1000 }).catch(() => undefined);
      return p.locator('[data-testid=me]').innerText({ timeout: 1000 }).catch(() => '');
    }, 20_000).toBe(user);
  });
});
