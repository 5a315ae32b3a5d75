/**
 * The sidebar: rooms, direct conversations, friends and friend requests,
 * with the forms to join, message and befriend. Rendered from the state
 * each time; what it does goes through the context the app gives it.
 */
import { attempt } from './banner.ts';
import { el, inlineForm } from './dom.ts';
import type { State } from './state.ts';

export type SidebarContext = {
  readonly state: State;
  isViewing(kind: 'room' | 'dm', name: string): boolean;
  open(kind: 'room' | 'dm', name: string): void;
  request(...fields: string[]): Promise<string[]>;
  /** A room was joined: load it and show it. */
  joined(name: string): Promise<void>;
};

export function dot(state: State, user: string): HTMLElement {
  const on = state.online.get(user.toLowerCase()) === true;
  return el('span', {
    class: `dot ${on ? 'on' : 'off'}`,
    attrs: { title: on ? 'online' : 'offline', 'aria-label': on ? 'online' : 'offline', 'data-testid': `presence-${user}` },
  });
}

function navButton(ctx: SidebarContext, kind: 'room' | 'dm', name: string, label: string, unread: number, extra?: Node): HTMLElement {
  const current = ctx.isViewing(kind, name);
  const button = el('button', {
    class: `nav${current ? ' current' : ''}`,
    attrs: { 'data-testid': `${kind}-${name}`, ...(current ? { 'aria-current': 'page' } : {}) },
    on: { click: () => ctx.open(kind, name) },
  });
  if (extra !== undefined) button.append(extra);
  button.append(label);
  if (unread > 0) button.append(el('span', { class: 'badge', text: String(unread) }));
  return el('li', {}, button);
}

export function sidebar(ctx: SidebarContext): HTMLElement {
  const { state } = ctx;
  const rooms = el(
    'ul',
    {},
    ...[...state.rooms.values()].sort((a, b) => a.name.localeCompare(b.name)).map((r) => navButton(ctx, 'room', r.name, `# ${r.name}`, r.unread)),
  );
  const dms = el('ul', {}, ...[...state.dms.values()].map((c) => navButton(ctx, 'dm', c.user, c.user, c.unread, dot(state, c.user))));
  const friends = el('ul', {}, ...state.friends.map((f) => navButton(ctx, 'dm', f, f, 0, dot(state, f))));
  const requests = el(
    'ul',
    {},
    ...state.requests.map((r) =>
      el(
        'li',
        { class: 'request' },
        el('span', { text: r }),
        el('button', {
          text: 'Accept',
          attrs: { 'data-testid': `accept-${r}` },
          on: { click: () => void attempt(() => ctx.request('friend_accept', r)).catch(() => undefined) },
        }),
        el('button', {
          text: 'Deny',
          attrs: { 'data-testid': `deny-${r}` },
          on: { click: () => void attempt(() => ctx.request('friend_deny', r)).catch(() => undefined) },
        }),
      ),
    ),
  );
  return el(
    'nav',
    { class: 'sidebar', attrs: { id: 'sidebar', 'aria-label': 'Rooms, messages and friends' } },
    el('h2', { text: 'Rooms' }),
    rooms,
    inlineForm(
      'Join a room',
      'room name',
      'Join',
      (name) =>
        attempt(async () => {
          await ctx.request('join', name);
          await ctx.joined(name);
        }),
      'join',
    ),
    el('h2', { text: 'Direct messages' }),
    dms,
    inlineForm(
      'Message a user',
      'user name',
      'Open',
      async (name) => {
        const found = await attempt(() => ctx.request('presence', name));
        state.online.set(found[1]!.toLowerCase(), found[2] === 'online');
        state.dm(found[1]!);
        ctx.open('dm', found[1]!);
      },
      'dm',
    ),
    el('h2', { text: 'Friends' }),
    friends,
    state.requests.length > 0 ? el('h3', { text: 'Requests' }) : '',
    requests,
    inlineForm('Add a friend', 'user name', 'Add', (name) => attempt(() => ctx.request('friend_request', name)), 'friend'),
  );
}

