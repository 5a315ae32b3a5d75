/**
 * Waits for something observable instead of sleeping a fixed time: retries
 * `check` (which throws while the condition does not hold) until it passes
 * or `timeoutMs` runs out, then rethrows its last failure.
 */
export async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 5000, everyMs = 10): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (performance.now() >= deadline) throw err;
      await new Promise((r) => setTimeout(r, everyMs));
    }
  }
}
