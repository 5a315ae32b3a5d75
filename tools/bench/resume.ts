/**
 * `resume` (DELIVERY.md): how long an inbox client waits for 1,000 entries
 * replayed from seq 0, when the store holds 1,000 entries in all and when
 * it holds 1,000,000 (1,000 users with 1,000 each). The entries are written
 * straight into the SQLite file (a million sends would take the bench
 * minutes); the measured user registers through the server, so its login
 * is real.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type net from 'node:net';
import { connect } from '../../src/client/client.ts';
import { encodeFrame } from '../../src/wire/frame-encoder.ts';
import { formatFields } from '../../src/text/fields.ts';
import { openSocket } from './load.ts';
import { startTextserver } from './systems.ts';
import type { SpecialResult } from './special.ts';

type Flags = { runs: number };
type Progress = (text: string) => void;

const PW = 'password1';
const PER_USER = 1000;
const frame = (...fields: string[]) => encodeFrame(formatFields(fields));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Fills the inboxes: the measured user's and `others` more users' with PER_USER entries each. */
function fill(data: string, measured: string, others: number): void {
  const db = new DatabaseSync(join(data, 'textserver.db'));
  try {
    db.exec('BEGIN');
    const user = db.prepare('SELECT id FROM users WHERE name = ?').get(measured) as { id: number };
    const addUser = db.prepare('INSERT INTO users (name, name_key, hash, created_at) VALUES (?, ?, ?, ?) RETURNING id');
    const addStream = db.prepare('INSERT INTO inbox_streams (user_id, epoch, head) VALUES (?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET head = excluded.head');
    const addEntry = db.prepare('INSERT INTO inbox (user_id, seq, kind, pending, payload, created_at) VALUES (?, ?, 0, 0, ?, ?)');
    const now = Date.now();
    const ids = [user.id];
    for (let i = 0; i < others; i++) ids.push((addUser.get(`filler${i}`, `filler${i}`, 'x', now) as { id: number }).id);
    for (const id of ids) {
      addStream.run(id, 'benchepoch01', PER_USER);
      for (let seq = 1; seq <= PER_USER; seq++) addEntry.run(id, seq, `send,someone,msg,entry ${seq} of a typical length for a message`, now);
    }
    db.exec('COMMIT');
  } finally {
    db.close();
  }
}

/** Milliseconds from `resume,,0` to the last of PER_USER entries. */
function timeResume(s: net.Socket): Promise<number> {
  return new Promise((resolve) => {
    let buf: Buffer = Buffer.alloc(0);
    let entries = 0;
    const started = performance.now();
    s.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(0)) {
        const size = buf.readUInt32BE(0);
        if (buf.subarray(5, 11).toString() === 'inbox,' && ++entries === PER_USER) resolve(performance.now() - started);
        buf = buf.subarray(5 + size);
      }
    });
    s.write(frame('resume', '', '0'));
  });
}

async function oneSize(users: number, flags: Flags, progress: Progress): Promise<number> {
  const data = mkdtempSync(join(tmpdir(), 'textserver-bench-resume-'));
  try {
    let system = await startTextserver({ fastHash: true, data });
    const setup = await connect({ port: system.port });
    await setup.call('register', 'reader', PW);
    await setup.close();
    await system.stop();
    progress(`bench resume: writing ${(users * PER_USER).toLocaleString('en-US')} entries`);
    fill(data, 'reader', users - 1);
    system = await startTextserver({ fastHash: true, data });
    try {
      const times: number[] = [];
      for (let r = 0; r < Math.max(3, flags.runs); r++) {
        const s = await openSocket(system.port);
        s.write(Buffer.concat([frame('sync'), frame('login', 'reader', PW)]));
        // the replies to sync and login (ok, ok) before the timed resume
        await new Promise<void>((resolve) => {
          let seen = 0;
          const onData = (chunk: Buffer) => {
            for (let at = 0; at + 5 <= chunk.length; at += 5 + chunk.readUInt32BE(at)) seen++;
            if (seen >= 2) {
              s.off('data', onData);
              resolve();
            }
          };
          s.on('data', onData);
        });
        times.push(await timeResume(s));
        s.destroy();
      }
      return median(times);
    } finally {
      await system.stop();
    }
  } finally {
    rmSync(data, { recursive: true, force: true });
  }
}

async function resume(flags: Flags, progress: Progress): Promise<SpecialResult> {
  const figures: Record<string, number> = {};
  for (const users of [1, 1000]) {
    progress(`bench resume: ${users} user(s)`);
    figures[`resume of ${PER_USER} entries, ${(users * PER_USER).toLocaleString('en-US')} entries stored in all: ms`] = await oneSize(users, flags, progress);
  }
  return {
    scenario: 'resume',
    title: `resume,,0 of ${PER_USER} retained entries (SQLite), until the last inbox frame arrives; target under 50 ms, flat as the store grows`,
    figures,
  };
}

export const RESUME = { resume };
