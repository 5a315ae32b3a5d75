/** A seeded random source, so `--seed` replays the checker's choices (whom to send to, when to drop, when to kill). */

export type Random = {
  /** In [0, 1). */
  next(): number;
  /** An integer in [0, n). */
  int(n: number): number;
  /** An exponentially distributed wait with this mean: events at random moments, without a fixed rhythm. */
  wait(meanMs: number): number;
  /** An independent stream for a part of the run (one per client), so one part's draws do not shift another's. */
  fork(label: number): Random;
};

/** mulberry32: small, fast, and plenty for picking moments and names (not for secrets). */
export function seeded(seed: number): Random {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n) => Math.floor(next() * n),
    wait: (meanMs) => Math.min(meanMs * 10, -Math.log(1 - next()) * meanMs),
    fork: (label) => seeded(Math.imul(seed ^ 0x9e3779b9, label + 1) ^ (label * 0x85ebca6b)),
  };
}
