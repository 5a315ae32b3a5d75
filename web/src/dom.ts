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

/** A one-field form: Enter or the button submits; the field is cleared on success. */
export function inlineForm(label: string, placeholder: string, button: string, submit: (value: string) => Promise<void> | void, testId: string): HTMLFormElement {
  const input = el('input', { attrs: { placeholder, 'aria-label': label, autocomplete: 'off', 'data-testid': `${testId}-input` } });
  const form = el('form', { class: 'inline-form' }, input, el('button', { text: button, attrs: { type: 'submit', 'data-testid': `${testId}-button` } }));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (value === '') return;
    void Promise.resolve(submit(value)).then(() => (input.value = ''));
  });
  return form;
}

export function formatTime(ms: number): string {
  const d = new Date(ms);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}
