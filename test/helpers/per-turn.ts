/**
 * Counts calls of a prototype's method per turn of the event loop, to check
 * that one connection's work is spread over turns: a count, not a time, so
 * a loaded machine does not change the answer.
 */
export type PerTurn = { max(): number; total(): number; stop(): void };

export function countPerTurn(proto: object, method: string): PerTurn {
  let turn = 0;
  let running = true;
  const tick = () => {
    turn++;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  const counts = new Map<number, number>();
  const target = proto as Record<string, (...args: unknown[]) => unknown>;
  const original = target[method]!;
  target[method] = function counted(this: unknown, ...args: unknown[]) {
    counts.set(turn, (counts.get(turn) ?? 0) + 1);
    return original.apply(this, args);
  };
  return {
    max: () => Math.max(0, ...counts.values()),
    total: () => [...counts.values()].reduce((a, b) => a + b, 0),
    stop: () => {
      running = false;
      target[method] = original;
    },
  };
}
