/** The end of a run: each user's whole inbox, read from 0 on a new connection, as the server replays it. */
import { connect } from '../../src/client/client.ts';
import { PASSWORD } from './actor.ts';
import type { Entry, FinalStream } from './verify.ts';

/** How long the replay up to the head may take before the read gives up (and the checker reports what is missing). */
const REPLAY_TIMEOUT_MS = 20_000;

export async function readInbox(port: number, user: string): Promise<FinalStream> {
  const client = await connect({ port, pushWords: { words: ['send', 'room', 'friend', 'presence'] } });
  try {
    // raw frames, not the library's de-duplicated events: a repeat from the server must be seen
    const entries: Entry[] = [];
    let head = -1;
    let complete = () => {};
    const done = new Promise<void>((r) => (complete = r));
    client.on('push', (f) => {
      if (f[0] !== 'inbox') return;
      entries.push({ seq: Number(f[1]), fields: f.slice(2) });
      if (head >= 0 && Number(f[1]) >= head) complete();
    });
    await client.login(user, PASSWORD);
    const resumed = await client.resume({ epoch: '', seq: 0 });
    head = resumed.head;
    if (head === 0 || entries.some((e) => e.seq >= head)) complete();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([done, new Promise<void>((r) => (timer = setTimeout(r, REPLAY_TIMEOUT_MS)))]);
    clearTimeout(timer);
    // one round trip more: a repeat right behind the head arrives before its answer
    await client.request('nop');
    return { epoch: resumed.epoch, head, entries };
  } finally {
    client.destroy();
  }
}
