/**
 * The order of user names in `members` and `friends`. Names are matched
 * case-insensitively (PROTOCOL.md), so they are listed that way too:
 * `alice,Amy,bob,Zed`, as a chat client shows a member list, not code-unit
 * order (`Amy,Zed,alice,bob`). Names are ASCII and unique case-insensitively,
 * so no two compare equal.
 */
export function byUserName(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  return x < y ? -1 : x > y ? 1 : 0;
}
