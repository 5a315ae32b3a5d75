/**
 * The rooms module's `history` reply as data: pure, no imports, so the api
 * module, the console and the browser client (built by web/tsconfig.json)
 * share one parser.
 */

export type HistoryMessage = { id: number; time: number; user: string; text: string };

/** A `history,<room>,<count>,<id>,<time>,<user>,<text>...` reply as messages, oldest first. */
export function parseHistory(fields: readonly string[]): HistoryMessage[] {
  const out: HistoryMessage[] = [];
  for (let i = 3; i + 3 < fields.length; i += 4) {
    out.push({ id: Number(fields[i]), time: Number(fields[i + 1]), user: fields[i + 2]!, text: fields[i + 3]! });
  }
  return out;
}
