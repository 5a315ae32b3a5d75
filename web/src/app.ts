/**
 * The browser client: register and log in, rooms with history and live
 * messages, direct messages, friends, presence and typing, over the
 * WebSocket transport with the shared client protocol.
 */
import { attempt, hideError, showError } from './banner.ts';
import { httpCall, jsonBody } from './http.ts';
import { Connection, ReplyError, type Arrival, type InboxEntry } from './connection.ts';
import { DirectMessages } from './direct.ts';
import { byId, el, formatTime, rebuild } from './dom.ts';
import { applyMenu, NARROW, setMenu } from './menu.ts';
import * as scroll from './scroll.ts';
import { dot, sidebar as renderSidebar } from './sidebar.ts';
import { parseHistory, State, type Message, type Pending, type Room } from './state.ts';

const PAGE = 50;
const TYPING_REPEAT_MS = 3000;
const TOKEN_KEY = 'textserver-token';
/** The open room or conversation, so a reload shows it again. */
const VIEW_KEY = 'textserver-view';

let state = new State();
let conn: Connection;
/** The logged-in user's direct messages (from the inbox); undefined while logged out. */
let dms: DirectMessages | undefined;
let wsUrl = '';
let typingSentAt = 0;

// ---- login -----------------------------------------------------------------

function renderLogin(): void {
  const user = el('input', { attrs: { id: 'login-user', autocomplete: 'username', 'aria-label': 'User name', placeholder: 'user name', required: '' } });
  const password = el('input', {
    attrs: { id: 'login-password', type: 'password', autocomplete: 'current-password', 'aria-label': 'Password', placeholder: 'password', required: '' },
  });
  const form = el(
    'form',
    { class: 'login', attrs: { 'aria-label': 'Log in' } },
    el('h1', { text: 'textserver' }),
    user,
    password,
    el(
      'div',
      { class: 'row' },
      el('button', { text: 'Log in', attrs: { type: 'submit', id: 'login-button' } }),
      el('button', { text: 'Register', attrs: { type: 'button', id: 'register-button' } }),
    ),
  );
  const login = () => attempt(() => logIn(user.value.trim(), password.value)).catch(() => password.select());
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    void login();
  });
  form.querySelector('#register-button')!.addEventListener('click', () => {
    void attempt(async () => {
      await conn.request('register', user.value.trim(), password.value);
      await logIn(user.value.trim(), password.value);
    }).catch(() => undefined);
  });
  byId('app').replaceChildren(form);
  user.focus();
}

async function logIn(user: string, password: string): Promise<void> {
  const res = await httpCall('/api/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user, password }) });
  const body = await jsonBody<{ user: string; token: string; error: string; info: string }>(res);
  if (!res.ok || body.token === undefined) throw new ReplyError(['error', 'nonfatal', body.error ?? 'unhandled', body.info ?? `HTTP ${res.status}`]);
  sessionStorage.setItem(TOKEN_KEY, body.token);
  await conn.useToken(body.token);
  state.me = body.user;
  await followInbox();
  await loadAll();
  hideError();
  render();
  focusStart();
}

/** After a login: the message input, else where a room is joined (the menu button on a phone). */
function focusStart(): void {
  const target =
    document.getElementById('composer-input') ??
    (NARROW.matches ? document.querySelector<HTMLElement>('.menu') : document.querySelector<HTMLElement>('[data-testid=join-input]'));
  target?.focus();
}

/** Logs out: the token is revoked and forgotten, the connection closed, and a fresh one waits at the login form. */
async function logOut(): Promise<void> {
  const token = sessionStorage.getItem(TOKEN_KEY);
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(VIEW_KEY);
  dms?.forget();
  dms = undefined;
  conn.close();
  state = new State();
  typingSentAt = 0;
  loadingOlder.clear();
  scroll.forget();
  setMenu(false);
  byId('app').replaceChildren(el('p', { class: 'loading', text: 'Logging out…' }));
  if (token !== null) {
    await fetch('/api/logout', { method: 'POST', headers: { authorization: `Bearer ${token}` } }).catch(() => undefined);
  }
  await connect();
  renderLogin();
}

// ---- loading ---------------------------------------------------------------

/**
 * The direct messages: the conversations this tab stored, then the inbox
 * from right after them (everything retained for a new tab), then the
 * sends a reload interrupted, again under their keys.
 */
async function followInbox(): Promise<void> {
  dms = new DirectMessages(state, conn, state.me!);
  const { position, outbox } = dms.restore();
  await conn.follow(position);
  dms.save();
  dms.resend(outbox, showError);
}

async function loadAll(): Promise<void> {
  const [rooms, friends, requests] = await Promise.all([conn.request('rooms'), conn.request('friends'), conn.request('friend_requests')]);
  state.friends = friends.slice(1);
  state.requests = requests.slice(1);
  await Promise.all(rooms.slice(1).map((r) => loadRoom(r)));
  await Promise.all(state.friends.map((f) => refreshPresence(f)));
  if (state.view === undefined && state.rooms.size > 0) state.view = { kind: 'room', name: [...state.rooms.keys()][0]! };
}

async function loadRoom(name: string): Promise<void> {
  const room = state.room(name);
  const [history, members] = await Promise.all([conn.request('history', name, 'last', String(PAGE)), conn.request('members', name)]);
  const messages = parseHistory(history);
  room.complete = messages.length < PAGE;
  State.merge(room, messages);
  room.members = new Set(members.slice(2));
  await Promise.all([...room.members].filter((m) => m !== state.me).map((m) => refreshPresence(m)));
}

async function refreshPresence(user: string): Promise<void> {
  const reply = await conn.request('presence', user).catch(() => undefined);
  if (reply !== undefined) state.online.set(user.toLowerCase(), reply[2] === 'online');
}

/**
 * Pages of missed messages a reconnect fetches per room at most; past
 * that, the room shows its newest page again and older ones load on
 * scrolling up, as after a reload (no gap, not everything in memory).
 */
const CATCH_UP_PAGES = 4;

/**
 * After a reconnect: what was said while we were away, per room, with
 * `history,after` from the last message seen before the drop (live
 * messages may reach the new socket first), page after page: a page
 * stops at 500 rows or the byte bound.
 */
async function catchUp(): Promise<void> {
  for (const room of state.rooms.values()) {
    let after = room.catchUpAfter ?? State.lastId(room);
    let pages = 0;
    for (;;) {
      if (pages++ === CATCH_UP_PAGES) {
        await reloadNewest(room);
        break;
      }
      const missed = parseHistory(await conn.request('history', room.name, 'after', String(after)));
      if (missed.length === 0) break;
      State.merge(room, missed);
      after = missed.at(-1)!.id;
    }
    room.catchUpAfter = undefined;
  }
  render();
}

/** The room's newest page in place of what it showed; older messages load on scrolling up. */
async function reloadNewest(room: Room): Promise<void> {
  const newest = parseHistory(await conn.request('history', room.name, 'last', String(PAGE)));
  room.messages = [];
  room.complete = newest.length < PAGE;
  State.merge(room, newest);
}

const loadingOlder = new Set<string>();

async function loadOlder(room: Room): Promise<void> {
  const first = State.firstId(room);
  if (room.complete || first === undefined || loadingOlder.has(room.name)) return;
  loadingOlder.add(room.name);
  const older = parseHistory(await conn.request('history', room.name, 'before', String(first), String(PAGE)).finally(() => loadingOlder.delete(room.name)));
  if (older.length < PAGE) room.complete = true;
  const list = document.querySelector<HTMLElement>('.messages');
  const fromBottom = list === null ? 0 : list.scrollHeight - list.scrollTop;
  State.merge(room, older);
  render();
  const again = document.querySelector<HTMLElement>('.messages');
  if (again !== null) again.scrollTop = again.scrollHeight - fromBottom;
}

// ---- pushes ----------------------------------------------------------------

function onPush(f: string[]): void {
  const [kind, a = '', b = '', ...rest] = f;
  if (kind === 'room') {
    const room = state.room(a);
    if (b === 'msg') {
      const [id, time, user, text] = rest;
      State.merge(room, [{ id: Number(id), time: Number(time), user: user!, text: text! }]);
      room.typing.delete(user!); // a message ends its sender's typing; their next start shows it again
      if (!isViewing('room', a)) room.unread++;
      else if (user !== state.me) scroll.arrived();
    } else if (b === 'joined' || b === 'left') {
      const user = rest[0]!;
      if (b === 'joined') room.members.add(user);
      else room.members.delete(user);
      room.messages.push({ id: 0, time: Date.now(), user, text: `${user} ${b} the room`, system: true });
      if (b === 'left' && user === state.me) {
        state.rooms.delete(a);
        if (isViewing('room', a)) state.view = undefined;
      }
    } else if (b === 'typing') {
      if (rest[1] === 'start') room.typing.add(rest[0]!);
      else room.typing.delete(rest[0]!);
    }
  } else if (kind === 'friend') {
    refreshFriends(b);
    return;
  } else if (kind === 'presence') {
    state.online.set(a.toLowerCase(), b === 'online');
  }
  render();
}

/** An inbox entry: a direct message (received, or sent from any device), or a friend request or answer. */
function onEntry(entry: InboxEntry, arrival: Arrival): void {
  const taken = dms?.entry(entry, arrival);
  if (taken === 'friend') refreshFriends(entry.fields[2] ?? '');
  if (taken === undefined || taken === 'friend') return;
  const { convo, received } = taken;
  if (isViewing('dm', convo.user)) {
    if (arrival === 'live' && received) scroll.arrived();
  } else if (received && arrival !== 'history') convo.unread++;
  renderSoon();
}

let friendsRefreshing: Promise<void> | undefined;
let friendsAgain = false;

/** The friend list and requests again; many deliveries at once (a replay) make one refresh, and one more if any came meanwhile. */
function refreshFriends(user: string): void {
  if (friendsRefreshing !== undefined) {
    friendsAgain = true;
    return;
  }
  friendsRefreshing = fetchFriends(user).finally(() => {
    friendsRefreshing = undefined;
    if (friendsAgain) {
      friendsAgain = false;
      refreshFriends('');
    }
  });
}

function fetchFriends(user: string): Promise<void> {
  return conn
    .request('friends')
    .then((r) => (state.friends = r.slice(1)))
    .then(() => conn.request('friend_requests'))
    .then((r) => {
      state.requests = r.slice(1);
      return Promise.all([user, ...state.friends].filter((u) => u !== '').map((u) => refreshPresence(u)));
    })
    .then(render, showError);
}

function isViewing(kind: 'room' | 'dm', name: string): boolean {
  return state.view?.kind === kind && state.view.name.toLowerCase() === name.toLowerCase();
}

// ---- the main view -----------------------------------------------------------

function open(kind: 'room' | 'dm', name: string): void {
  state.view = { kind, name };
  sessionStorage.setItem(VIEW_KEY, JSON.stringify(state.view));
  if (kind === 'room') state.room(name).unread = 0;
  else state.dm(name).unread = 0;
  scroll.forget();
  setMenu(false);
  render();
  byId('composer-input').focus();
}

function sidebar(): HTMLElement {
  return renderSidebar({
    state,
    isViewing,
    open,
    request: (...fields) => conn.request(...fields),
    joined: async (name) => {
      await loadRoom(name);
      open('room', name);
    },
  });
}

function messageItem(m: Message): HTMLElement {
  if (m.system) return el('li', { class: 'system', text: m.text });
  // a direct message replayed from the inbox has no known time (entries carry none)
  const time = m.time === 0 ? '' : el('time', { text: formatTime(m.time), attrs: { datetime: new Date(m.time).toISOString() } });
  return el('li', { class: m.user === state.me ? 'mine' : '' }, el('span', { class: 'who', text: m.user }), time, el('p', { text: m.text }));
}

/** A direct message sent and not answered yet: its carbon replaces it. */
function pendingItem(p: Pending): HTMLElement {
  return el(
    'li',
    { class: 'mine pending', attrs: { 'data-pending': '' } },
    el('span', { class: 'who', text: state.me ?? '' }),
    el('span', { class: 'sending', text: 'sending…' }),
    el('p', { text: p.text }),
  );
}

function conversation(): HTMLElement {
  const view = state.view;
  if (view === undefined) return el('main', { class: 'empty' }, el('p', { text: 'Join a room or open a conversation to start chatting.' }));
  const room = view.kind === 'room' ? state.room(view.name) : undefined;
  const convo = room === undefined ? state.dm(view.name) : undefined;
  const items = room !== undefined ? room.messages.map(messageItem) : [...convo!.messages.map(messageItem), ...convo!.pending.map(pendingItem)];
  const viewKey = `${view.kind}:${view.name.toLowerCase()}`;
  const list = el(
    'ol',
    { class: 'messages', attrs: { 'aria-live': 'polite', 'aria-label': 'Messages', 'data-testid': 'messages', 'data-view': viewKey, tabindex: '0' } },
    ...items,
  );
  scroll.watch(list, () => room !== undefined && void loadOlder(room).catch(showError));
  const typing = room === undefined ? [] : [...room.typing].filter((u) => u !== state.me);
  const title =
    room === undefined ? el('h2', {}, dot(state, view.name), view.name) : el('h2', { text: `# ${view.name}`, attrs: { title: [...room.members].join(', ') } });
  const input = el('input', {
    attrs: {
      id: 'composer-input',
      'data-keep': `composer ${viewKey}`,
      'aria-label': 'Message',
      placeholder: `Message ${room === undefined ? view.name : `#${view.name}`}`,
      autocomplete: 'off',
      maxlength: '4000',
    },
  });
  if (room !== undefined) {
    input.addEventListener('input', () => {
      if (input.value !== '' && Date.now() - typingSentAt > TYPING_REPEAT_MS) {
        typingSentAt = Date.now();
        void conn.request('typing', room.name, 'start').catch(() => undefined);
      } else if (input.value === '' && typingSentAt !== 0) {
        typingSentAt = 0;
        void conn.request('typing', room.name, 'stop').catch(() => undefined);
      }
    });
  }
  const composer = el('form', { class: 'composer' }, input, el('button', { text: 'Send', attrs: { type: 'submit', 'data-testid': 'send' } }));
  composer.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value;
    if (text.trim() === '') return;
    typingSentAt = 0;
    if (room === undefined) return sendDirect(view.name, text);
    void attempt(async () => {
      await conn.request('say', room.name, text);
      const current = byId<HTMLInputElement>('composer-input'); // a push may have re-rendered the form meanwhile
      current.value = '';
      render();
      scroll.toBottom(); // what you said is in view, wherever you were reading
      byId('composer-input').focus();
    }).catch(() => undefined);
  });
  const leave =
    room === undefined
      ? ''
      : el('button', {
          text: 'Leave',
          class: 'leave',
          attrs: { 'data-testid': 'leave' },
          on: { click: () => void attempt(() => conn.request('leave', room.name)).catch(() => undefined) },
        });
  return el(
    'main',
    {},
    el('header', { class: 'conversation-header' }, title, leave),
    el('div', { class: 'list' }, list, scroll.marker()),
    el('p', {
      class: 'typing',
      attrs: { 'data-testid': 'typing', 'aria-live': 'polite' },
      text: typing.length === 0 ? '' : `${typing.join(', ')} ${typing.length === 1 ? 'is' : 'are'} typing…`,
    }),
    composer,
  );
}

/**
 * A direct message: shown as pending at once (the field is free for the
 * next one), sent under a `once` key, waiting through reconnects; its
 * carbon shows it for good. A refusal gives the text back to the field.
 */
function sendDirect(to: string, text: string): void {
  const input = byId<HTMLInputElement>('composer-input');
  input.value = '';
  const sending = dms!.send(to, text);
  render();
  scroll.toBottom();
  sending.then(render, (err: unknown) => {
    showError(err);
    render();
    const current = document.getElementById('composer-input') as HTMLInputElement | null;
    if (current !== null && isViewing('dm', to) && current.value === '') current.value = text;
  });
}

let renderPending = false;

/** Redraws once for many changes: a replay of thousands of entries is one redraw per frame, not one per entry. */
function renderSoon(): void {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    render();
  });
}

/** Redraws the whole page from `state`, keeping typed text, the focus and the reading position. */
function render(): void {
  if (state.me === undefined) return;
  const header = el(
    'header',
    { class: 'top' },
    el('button', {
      class: 'menu',
      text: '☰',
      attrs: { 'aria-label': 'Menu', 'aria-controls': 'sidebar', 'data-testid': 'menu' },
      on: { click: () => setMenu(!document.body.classList.contains('menu-open'), true) },
    }),
    el('span', { class: 'me', text: state.me, attrs: { 'data-testid': 'me' } }),
    el('span', { class: `state ${conn.open ? 'on' : 'off'}`, text: conn.open ? 'connected' : 'reconnecting…', attrs: { 'data-testid': 'connection' } }),
    el('button', { class: 'logout', text: 'Log out', attrs: { type: 'button', 'data-testid': 'logout' }, on: { click: () => void logOut().catch(showError) } }),
  );
  const position = scroll.capture();
  const app = byId('app');
  rebuild(app, () => app.replaceChildren(header, el('div', { class: 'layout' }, sidebar(), conversation())));
  scroll.restore(position);
  applyMenu();
}

// ---- start -------------------------------------------------------------------

/** After a reload: the room or conversation that was open, if it is still there. */
function restoreView(): void {
  try {
    const view = JSON.parse(sessionStorage.getItem(VIEW_KEY) ?? 'null') as { kind?: unknown; name?: unknown } | null;
    if (typeof view?.name !== 'string') return;
    const there = view.kind === 'room' ? state.rooms.has(view.name) : view.kind === 'dm' && state.dms.has(view.name.toLowerCase());
    if (there) state.view = { kind: view.kind as 'room' | 'dm', name: view.name };
  } catch {
    // a damaged entry: the default view
  }
}

/** A new connection to the server's WebSocket; resolves once open. */
function connect(): Promise<void> {
  conn = new Connection(wsUrl, {
    push: onPush,
    entry: onEntry,
    rebuild: () => dms?.rebuild(),
    gap: () => dms?.gap(),
    state: (s) => {
      // typing pushes missed while away could leave a stale "is typing" for ever
      if (s === 'closed')
        for (const room of state.rooms.values()) {
          room.typing.clear();
          // where the catch-up starts: the first drop's position holds over failed reconnects
          room.catchUpAfter ??= State.lastId(room);
        }
      render();
    },
    resumed: () => void catchUp().catch(showError),
  });
  return conn.start();
}

async function boot(): Promise<void> {
  const info = (await (await httpCall('/api/info')).json()) as { ws: { port: number; path: string } | null };
  if (info.ws === null) throw new Error('this server has no WebSocket transport (start it with --ws-port)');
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  wsUrl = `${scheme}://${location.hostname}:${info.ws.port}${info.ws.path}`;
  await connect();
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token !== null) {
    try {
      await conn.useToken(token);
      state.me = (await conn.request('whoami'))[1];
      await followInbox();
      await loadAll();
      restoreView();
      render();
      focusStart();
      return;
    } catch (err) {
      if (!(err instanceof ReplyError)) {
        // the connection dropped while starting: start again, from what is stored
        showError(err);
        setTimeout(() => location.reload(), 1000);
        return;
      }
      sessionStorage.removeItem(TOKEN_KEY);
    }
  }
  renderLogin();
}

// the snapshot is written shortly after each change; a reload right after one writes it now
window.addEventListener('pagehide', () => dms?.save());

void boot().catch(showError);
