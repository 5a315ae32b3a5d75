/**
 * The sidebar as a menu on a narrow screen: hidden by CSS (display:none, so
 * its controls take no Tab stops) until opened; while open, the
 * conversation behind it is inert and Escape closes it.
 */

/** Where the sidebar becomes a menu (app.css has the same width). */
export const NARROW = window.matchMedia('(max-width: 640px)');

export function setMenu(open: boolean, moveFocus = false): void {
  document.body.classList.toggle('menu-open', open);
  applyMenu();
  if (open && moveFocus) document.querySelector<HTMLElement>('#sidebar button, #sidebar input')?.focus();
}

export function applyMenu(): void {
  const open = document.body.classList.contains('menu-open');
  document.querySelector('.menu')?.setAttribute('aria-expanded', String(open));
  const main = document.querySelector('main');
  if (main !== null) main.inert = open && NARROW.matches;
}

document.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape' || !document.body.classList.contains('menu-open')) return;
  setMenu(false);
  document.querySelector<HTMLElement>('.menu')?.focus();
});
NARROW.addEventListener('change', applyMenu);
