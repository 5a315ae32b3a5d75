/**
 * The reading position of the message list across re-renders: a list at
 * its bottom follows new messages; a list scrolled up (someone reading
 * history) stays where it is, and a "new messages" button counts what
 * arrived below and scrolls down when clicked.
 */
import { el } from './dom.ts';

/** A few pixels of slack: zoom and fractional layouts leave the last pixel unreachable. */
const SLACK = 4;

let unseen = 0;

export function atBottom(list: HTMLElement): boolean {
  return list.scrollHeight - list.scrollTop - list.clientHeight <= SLACK;
}

const currentList = () => document.querySelector<HTMLElement>('.messages');

/** Before a re-render: where the list is, for `restore`. */
export type Position = { view: string | undefined; top: number; bottom: boolean };

export function capture(): Position | undefined {
  const list = currentList();
  return list === null ? undefined : { view: list.dataset.view, top: list.scrollTop, bottom: atBottom(list) };
}

/** After a re-render: the same place in the same conversation, else the newest message. */
export function restore(before: Position | undefined): void {
  const list = currentList();
  if (list === null) return;
  if (before !== undefined && before.view === list.dataset.view && !before.bottom) list.scrollTop = before.top;
  else toBottom();
}

export function toBottom(): void {
  const list = currentList();
  if (list !== null) list.scrollTop = list.scrollHeight;
  forget();
}

/** A message arrived in the conversation on screen: counted when the reader is not at the bottom. */
export function arrived(): void {
  const list = currentList();
  if (list !== null && !atBottom(list)) unseen++;
}

/** Another conversation, a log-out, or the reader reached the bottom. */
export function forget(): void {
  unseen = 0;
  const marker = document.querySelector<HTMLElement>('.new-messages');
  if (marker !== null) marker.hidden = true;
}

/** The list's scroll handling: reaching the bottom clears the count; near the top asks for older messages. */
export function watch(list: HTMLElement, nearTop: () => void): void {
  list.addEventListener('scroll', () => {
    // a scroll event queued before a re-render replaced this list arrives on the detached one, whose
    // scrollTop reads 0: taken for the top, it loaded older messages the reader never scrolled to
    if (!list.isConnected) return;
    if (unseen > 0 && atBottom(list)) forget();
    if (list.scrollTop < 40) nearTop();
  });
}

export function marker(): HTMLElement {
  const button = el('button', {
    class: 'new-messages',
    text: `${unseen} new message${unseen === 1 ? '' : 's'} ↓`,
    attrs: { type: 'button', 'data-testid': 'new-messages' },
    on: {
      click: () => {
        toBottom();
        currentList()?.focus({ preventScroll: true });
      },
    },
  });
  button.hidden = unseen === 0;
  return button;
}
