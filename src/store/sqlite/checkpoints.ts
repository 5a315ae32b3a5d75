/**
 * When the WAL is copied into the database file, and how it is kept from
 * growing. The copies run in a worker thread (checkpointer.ts); this class,
 * on the main thread, decides when.
 *
 * SQLite starts its WAL over only at a write that finds every frame in it
 * copied. Under steady writes a checkpoint never gets there (frames arrive
 * while it copies), and the WAL grew by 100 MB/s for as long as the load
 * lasted. So past `restartBytes` one checkpoint runs with new writes held
 * back (they wait at their BEGIN, in order): it copies only what came since
 * the previous one, a few milliseconds, and the next write starts the WAL
 * over. A WAL written over in place is also cheaper to sync than one that
 * grows (an fdatasync of a file whose size changed commits the file
 * system's journal too): SQLite keeps the file (journal_size_limit), so
 * its size on disk is not what it holds; the wal-index says that.
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { endianness } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';

/** Copy once this much of the WAL is not yet copied, and start it over past restartBytes. */
export type WalLimits = { checkpointBytes: number; restartBytes: number };
export const WAL_LIMITS: WalLimits = { checkpointBytes: 16 * 1024 * 1024, restartBytes: 64 * 1024 * 1024 };
/** The longest writes are held back for one checkpoint (a slow disk): past it, they go on and the WAL grows. */
const HOLD_MS = 500;
/** A failed checkpoint is tried again, and a dead worker replaced, on this period. */
const CHECK_MS = 1000;

/** Writes of the one connection, held back between two of its batches. */
export type WriteGate = { hold(): Promise<void>; release(): void };

export class Checkpoints {
  readonly #file: string;
  readonly #log: Logger;
  readonly #writes: WriteGate;
  readonly #limits: WalLimits;
  readonly #index: WalIndex;
  readonly #timer: NodeJS.Timeout;
  /** Undefined from a worker's death until its replacement starts. */
  #worker: Worker | undefined;
  /** The checkpoint running, if any, and the kind of the last one. */
  #running = false;
  #last: 'plain' | 'held' = 'plain';
  #held = false;
  #heldAt = 0;
  #holdTimer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(file: string, log: Logger, writes: WriteGate, limits: WalLimits) {
    this.#file = file;
    this.#log = log;
    this.#writes = writes;
    this.#limits = limits;
    this.#index = new WalIndex(`${file}-shm`);
    this.#start();
    this.#timer = setInterval(() => this.committed(), CHECK_MS);
    this.#timer.unref();
  }

  /** After each commit: starts a checkpoint when one is due (a read of the wal-index, no system call beyond it). */
  committed(): void {
    if (this.#running || this.#closed || this.#worker === undefined) return;
    const wal = this.#index.read();
    if (wal === undefined) {
      // no wal-index to read (never seen): the file's size, which only grows between restarts, still bounds it
      if (this.#walFileBytes() >= this.#limits.checkpointBytes) this.#run('plain');
      return;
    }
    const uncopied = (wal.frames - wal.copied) * wal.frameBytes;
    // a held checkpoint never follows a held one: writes flow between two holds, and one without
    // a hold copies the bulk first, so the held one copies only what came during it
    if (wal.frames * wal.frameBytes >= this.#limits.restartBytes && this.#last === 'plain') this.#runHeld();
    else if (uncopied >= this.#limits.checkpointBytes) this.#run('plain');
  }

  /** A worker that dies (out of memory, a crash in SQLite) is replaced: without checkpoints the WAL grows without bound. */
  #start(): void {
    const worker = new Worker(new URL('./checkpointer.ts', import.meta.url), { workerData: { file: this.#file } });
    this.#worker = worker;
    this.#running = false;
    worker.on('message', (m: { ok: boolean; error?: string }) => {
      this.#running = false;
      this.#endHold();
      if (!m.ok) this.#log.warn({ err: m.error }, 'checkpoint failed; will retry');
      else this.committed();
    });
    worker.on('error', (err) => this.#log.error({ err: err.message }, 'checkpointer failed'));
    worker.on('exit', () => {
      if (this.#worker !== worker) return;
      this.#worker = undefined;
      this.#running = false;
      this.#endHold();
      if (this.#closed) return;
      this.#log.error('checkpointer stopped; starting another');
      const again = setTimeout(() => {
        if (!this.#closed) this.#start();
      }, CHECK_MS);
      again.unref();
    });
    worker.unref();
  }

  #run(kind: 'plain' | 'held'): void {
    if (this.#worker === undefined) return;
    this.#running = true;
    this.#last = kind;
    this.#worker.postMessage('checkpoint');
  }

  #walFileBytes(): number {
    return statSync(`${this.#file}-wal`, { throwIfNoEntry: false })?.size ?? 0;
  }

  /** A checkpoint from the moment the open batch has committed, with later writes held back until it ends. */
  #runHeld(): void {
    this.#running = true;
    this.#last = 'held';
    this.#held = true;
    this.#heldAt = performance.now();
    this.#holdTimer = setTimeout(() => this.#endHold(), HOLD_MS);
    void this.#writes.hold().then(() => {
      if (this.#held && this.#worker !== undefined) this.#run('held');
      else {
        // the hold ended (timed out, closing, the worker died) before the batch committed
        this.#running = false;
        this.#endHold();
      }
    });
  }

  #endHold(): void {
    if (!this.#held) return;
    this.#held = false;
    clearTimeout(this.#holdTimer);
    this.#log.debug({ ms: Math.round(performance.now() - this.#heldAt) }, 'writes held back for a checkpoint');
    this.#writes.release();
  }

  /** Stops the worker (it finishes the checkpoint it runs); never leaves it in the database being closed. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#endHold();
    this.#index.close();
    const worker = this.#worker;
    if (worker === undefined) return;
    // held (ref) while closing: an unref'd worker would let the process exit mid-close
    worker.ref();
    worker.postMessage('close');
    const exited = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 5000);
      worker.once('exit', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    // never close the database under a worker still in it: a process exiting then can crash
    if (!exited) await worker.terminate();
  }
}

/**
 * The two counters of SQLite's wal-index (the `-shm` file, mapped shared
 * by every connection; its layout is documented in walformat.html): frames
 * in the WAL since it last started over (mxFrame, header offset 16) and
 * frames already copied into the database (nBackfill, offset 96), in the
 * machine's byte order. Read with pread, which sees the shared mapping.
 */
export class WalIndex {
  readonly #path: string;
  #fd: number | undefined;
  readonly #buf = Buffer.alloc(100);
  readonly #le = endianness() === 'LE';

  constructor(path: string) {
    this.#path = path;
  }

  read(): { frames: number; copied: number; frameBytes: number } | undefined {
    try {
      this.#fd ??= openSync(this.#path, 'r');
      if (readSync(this.#fd, this.#buf, 0, 100, 0) < 100) return undefined;
    } catch {
      return undefined; // not there yet: nothing to copy
    }
    const b = this.#buf;
    const page = this.#le ? b.readUInt16LE(14) : b.readUInt16BE(14);
    const frames = this.#le ? b.readUInt32LE(16) : b.readUInt32BE(16);
    const copied = this.#le ? b.readUInt32LE(96) : b.readUInt32BE(96);
    // a frame is a 24-byte header and a page; page size 65536 is stored as 1
    return { frames, copied: Math.min(copied, frames), frameBytes: 24 + (page === 1 ? 65536 : page) };
  }

  close(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }
}
