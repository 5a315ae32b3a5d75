/** Tiny DOM helpers: elements are built with textContent only, so nothing a user types becomes markup. */

type Props = { class?: string; text?: string; attrs?: Record<string, string>; on?: Record<string, (e: Event) => void> };

export function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: Props = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props.class !== undefined) node.className = props.class;
  if (props.text !== undefined) node.textContent = props.text;
  for (const [k, v] of Object.entries(props.attrs ?? {})) node.setAttribute(k, v);
  for (const [k, fn] of Object.entries(props.on ?? {})) node.addEventListener(k, fn);
  for (const c of children) node.append(c);
  return node;
}

export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (node === null) throw new Error(`#${id} missing`);
  return node as T;
}

/**
 * A one-field form: Enter or the button submits; the field is cleared on
 * success and kept, selected, on failure (`submit` reports its own errors).
 */
export function inlineForm(
  label: string,
  placeholder: string,
  button: string,
  submit: (value: string) => Promise<unknown> | void,
  testId: string,
): HTMLFormElement {
  const input = el('input', { attrs: { placeholder, 'aria-label': label, autocomplete: 'off', 'data-testid': `${testId}-input` } });
  const form = el('form', { class: 'inline-form' }, input, el('button', { text: button, attrs: { type: 'submit', 'data-testid': `${testId}-button` } }));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (value === '') return;
    // the page may have been redrawn meanwhile: act on the field now showing
    const current = () => document.querySelector<HTMLInputElement>(`[data-testid="${testId}-input"]`) ?? input;
    void Promise.resolve()
      .then(() => submit(value))
      .then(
        () => void (current().value = ''),
        () => current().select(),
      );
  });
  return form;
}

export function formatTime(ms: number): string {
  const d = new Date(ms);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

/** What identifies a control across re-renders: `data-keep`, else its id or test id. */
function keyOf(node: Element): string | undefined {
  const html = node as HTMLElement;
  return html.dataset.keep ?? (html.id !== '' ? html.id : html.dataset.testid);
}

/**
 * Replaces the children of `root` through `build`, keeping what a re-render
 * would lose: the text typed in fields and the keyboard focus (with the caret).
 */
export function rebuild(root: HTMLElement, build: () => void): void {
  const values = new Map<string, string>();
  for (const input of root.querySelectorAll('input')) {
    const key = keyOf(input);
    if (key !== undefined && input.type !== 'password') values.set(key, input.value);
  }
  const active = document.activeElement;
  const focusKey = active !== null && root.contains(active) ? keyOf(active) : undefined;
  const caret = active instanceof HTMLInputElement ? { start: active.selectionStart, end: active.selectionEnd } : undefined;
  build();
  for (const input of root.querySelectorAll('input')) {
    const value = values.get(keyOf(input) ?? '');
    if (value !== undefined) input.value = value;
  }
  if (focusKey === undefined) return;
  const again = [...root.querySelectorAll<HTMLElement>('[id], [data-testid], [data-keep]')].find((n) => keyOf(n) === focusKey);
  again?.focus({ preventScroll: true });
  if (again instanceof HTMLInputElement && caret !== undefined && caret.start !== null) again.setSelectionRange(caret.start, caret.end ?? caret.start);
}
