/** Taken at import: a test may put the globals on vitest's fake clock, and polling must still run in real time. */
const now = performance.now.bind(performance);
const wait = setTimeout;

/**
 * Waits for something observable instead of sleeping a fixed time: retries
 * `check` (which throws while the condition does not hold) until it passes
 * or `timeoutMs` runs out, then rethrows its last failure.
 */
export async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 5000, everyMs = 10): Promise<T> {
  const deadline = now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (now() >= deadline) throw err;
      await new Promise((r) => wait(r, everyMs));
    }
  }
}
