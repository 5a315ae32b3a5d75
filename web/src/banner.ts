/** The error banner: one readable line per failure, hidden again after a while or on success. */
import { ConnectionClosedError, ReplyError } from './connection.ts';
import { byId } from './dom.ts';
import { UNREACHABLE } from './http.ts';

const SHOWN_MS = 6000;
let timer: number | undefined;

/**
 * `invalid room: room names are ...`; just the info when it already says
 * what the type says (`wrong user or password`, not the same words twice).
 */
export function errorText(err: unknown): string {
  if (err instanceof ReplyError) {
    const title = err.type.replace(/_/g, ' ');
    const info = err.info.trim();
    if (info === '') return title;
    return info.toLowerCase().includes(title.toLowerCase()) ? info : `${title}: ${info}`;
  }
  // a request made while the WebSocket is down (it reconnects by itself); a logout's own closing is no failure to explain
  if (err instanceof ConnectionClosedError && err.message !== 'logged out') return UNREACHABLE;
  return err instanceof Error ? err.message : String(err);
}

export function showError(err: unknown): void {
  const box = byId('error');
  box.textContent = errorText(err);
  box.hidden = false;
  clearTimeout(timer);
  timer = window.setTimeout(hideError, SHOWN_MS);
}

export function hideError(): void {
  clearTimeout(timer);
  byId('error').hidden = true;
}

/** Runs fn; a failure is shown in the banner and rethrown (callers decide what else to do). */
export async function attempt<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    showError(err);
    throw err;
  }
}
