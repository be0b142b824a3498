// The Parley web client: state, rendering and wiring. Plain ES modules, no build step.

import { api, auth, ApiError, refreshSession } from './api.js';
import { $, h, setError, debounce, formatTime, dayKey, dayLabel, shortStamp, initials } from './dom.js';
import { RealtimeSocket } from './socket.js';

const PAGE = 50;

const state = {
  me: null,
  conversations: new Map(),
  users: new Map(),
  presence: new Map(),
  messages: new Map(),
  typing: new Map(),
  activeId: null,
  online: false,
};

let socket = null;

// ---------------------------------------------------------------------------------------------
// Boot and authentication

async function boot() {
  wireAuthForms();
  wireApp();
  try {
    const me = await api('GET', '/api/v1/users/me');
    await signedIn(me);
  } catch (error) {
    if (error.status === 401 && await refreshSession()) {
      try { return await signedIn(await api('GET', '/api/v1/users/me')); } catch { /* fall through */ }
    }
    showAuth();
  }
}

function showAuth() {
  $('#app-view').hidden = true;
  $('#auth-view').hidden = false;
  document.title = 'Parley';
  selectTab('signin');
}

function selectTab(which) {
  const signin = which === 'signin';
  $('#tab-signin').setAttribute('aria-selected', String(signin));
  $('#tab-signup').setAttribute('aria-selected', String(!signin));
  $('#signin-form').hidden = !signin;
  $('#signup-form').hidden = signin;
  (signin ? $('#signin-form input[name=login]') : $('#signup-form input[name=username]')).focus();
}

function wireAuthForms() {
  $('#tab-signin').addEventListener('click', () => selectTab('signin'));
  $('#tab-signup').addEventListener('click', () => selectTab('signup'));

  $('#signin-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const data = new FormData(form);
    if (!data.get('login') || !data.get('password')) return setError(form, 'Enter your username (or email) and password.');
    await submitting(form, async () => {
      const result = await auth.login(String(data.get('login')).trim(), String(data.get('password')));
      form.reset();
      await signedIn(result.user);
    });
  });

  $('#signup-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const data = Object.fromEntries(new FormData(form));
    if (!data.username || !data.email || !data.password) return setError(form, 'Username, email and password are required.');
    const fields = { username: data.username.trim(), email: data.email.trim(), password: data.password };
    if (data.displayName && data.displayName.trim()) fields.displayName = data.displayName.trim();
    await submitting(form, async () => {
      const result = await auth.register(fields);
      form.reset();
      await signedIn(result.user);
    });
  });
}

/** Runs an action for a form, disabling it meanwhile and showing the server's message on failure. */
async function submitting(form, action) {
  setError(form, '');
  const buttons = form.querySelectorAll('button');
  buttons.forEach((b) => { b.disabled = true; });
  try {
    await action();
  } catch (error) {
    setError(form, error instanceof ApiError ? error.message : 'Something went wrong. Try again.');
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

async function signedIn(me) {
  state.me = me;
  state.users.set(me.id, me);
  $('#auth-view').hidden = true;
  $('#app-view').hidden = false;
  $('#me-name').textContent = me.displayName;
  $('#me-avatar').textContent = initials(me.displayName);
  await loadConversations();
  socket = new RealtimeSocket({ onFrame, onStatus, onSessionEnded: signOutLocally });
  socket.start();
  const wanted = location.hash.match(/^#\/c\/([0-9a-f-]{36})$/);
  if (wanted && state.conversations.has(wanted[1])) openConversation(wanted[1]);
}

async function signOut() {
  await auth.logout();
  signOutLocally();
}

function signOutLocally() {
  if (socket) socket.stop();
  socket = null;
  state.me = null;
  state.conversations.clear();
  state.messages.clear();
  state.typing.clear();
  state.activeId = null;
  $('#conversation-list').replaceChildren();
  closeConversationView();
  $('#offline-banner').hidden = true;
  history.replaceState(null, '', location.pathname);
  showAuth();
}

// ---------------------------------------------------------------------------------------------
// Data

async function loadConversations() {
  const { conversations } = await api('GET', '/api/v1/conversations');
  const seen = new Set();
  for (const conversation of conversations) {
    upsertConversation(conversation);
    seen.add(conversation.id);
  }
  for (const id of [...state.conversations.keys()]) if (!seen.has(id)) state.conversations.delete(id);
  await ensureUsers(conversations.flatMap((c) => c.members.map((m) => m.userId)));
  await refreshPresence();
  renderConversationList();
  if (state.activeId) renderConversationHeader();
}

function upsertConversation(conversation) {
  state.conversations.set(conversation.id, conversation);
}

async function ensureUsers(ids) {
  const missing = [...new Set(ids)].filter((id) => !state.users.has(id));
  for (let i = 0; i < missing.length; i += 200) {
    const { users } = await api('GET', '/api/v1/users?ids=' + missing.slice(i, i + 200).join(','));
    for (const user of users) state.users.set(user.id, user);
  }
}

async function refreshPresence() {
  const peers = [...state.conversations.values()].filter((c) => c.type === 'direct').map(peerOf).filter(Boolean);
  if (!peers.length) return;
  const { presence } = await api('GET', '/api/v1/presence?userIds=' + [...new Set(peers)].slice(0, 200).join(','));
  for (const entry of presence) state.presence.set(entry.userId, entry);
}

function peerOf(conversation) {
  const other = conversation.members.find((m) => m.userId !== state.me.id);
  return other ? other.userId : null;
}

function userName(id) {
  const user = state.users.get(id);
  return user ? user.displayName : 'Someone';
}

function conversationName(conversation) {
  if (conversation.type === 'group') return conversation.name || 'Group';
  return userName(peerOf(conversation));
}

function messageStore(id) {
  if (!state.messages.has(id)) {
    state.messages.set(id, { bySeq: new Map(), pending: new Map(), hasOlder: true, loaded: false, loading: false });
  }
  return state.messages.get(id);
}

function knownLastSeq(id) {
  const store = messageStore(id);
  let max = 0;
  for (const seq of store.bySeq.keys()) if (seq > max) max = seq;
  return max;
}

function addMessage(message) {
  const store = messageStore(message.conversationId);
  store.bySeq.set(message.seq, message);
  if (message.senderId === state.me.id && message.clientMsgId) store.pending.delete(message.clientMsgId);
  const conversation = state.conversations.get(message.conversationId);
  if (conversation && message.seq >= conversation.lastSeq) {
    conversation.lastSeq = message.seq;
    conversation.lastMessage = message;
    conversation.updatedAt = message.createdAt;
  }
}

// ---------------------------------------------------------------------------------------------
// Real-time frames

function onStatus(online) {
  state.online = online;
  clearTimeout(onStatus.bannerTimer);
  if (online) {
    $('#offline-banner').hidden = true;
    catchUp();
  } else {
    // A short blip is not worth a banner.
    onStatus.bannerTimer = setTimeout(() => { if (!state.online) $('#offline-banner').hidden = false; }, 800);
  }
}

/** After (re)connecting: refresh the list, sync the open conversation, resend what is pending. */
async function catchUp() {
  try { await loadConversations(); } catch { /* the socket will retry */ }
  if (state.activeId && messageStore(state.activeId).loaded) {
    socket.send({ type: 'sync', cursors: { [state.activeId]: knownLastSeq(state.activeId) } });
  }
  for (const [conversationId, store] of state.messages) {
    for (const pending of store.pending.values()) {
      if (pending.status === 'failed') continue;
      socket.send({ type: 'send', conversationId, clientMsgId: pending.clientMsgId, body: pending.body });
    }
  }
  markActiveRead();
}

function onFrame(frame) {
  switch (frame.type) {
    case 'message': return onMessage(frame.message);
    case 'ack': return onMessage(frame.message);
    case 'synced':
      if (frame.hasMore && frame.lastSeq) socket.send({ type: 'sync', cursors: { [frame.conversationId]: frame.lastSeq } });
      return;
    case 'receipt': return onReceipt(frame);
    case 'typing': return onTyping(frame);
    case 'presence':
      state.presence.set(frame.userId, frame);
      renderConversationList();
      if (state.activeId) renderConversationHeader();
      return;
    case 'conversation': return onConversationEvent(frame);
    case 'error': return onError(frame);
    default: return;
  }
}

function onMessage(message) {
  const conversation = state.conversations.get(message.conversationId);
  if (!conversation) {
    // A conversation we do not know yet: the list fetch brings it with the right counts.
    loadConversations().catch(() => {});
    return;
  }
  const isNew = !messageStore(message.conversationId).bySeq.has(message.seq);
  addMessage(message);
  if (isNew && message.senderId !== state.me.id) {
    clearTyping(message.conversationId, message.senderId);
    const readNow = state.activeId === message.conversationId && document.visibilityState === 'visible';
    if (readNow) {
      markActiveRead();
    } else {
      conversation.unreadCount = Math.max(0, conversation.lastSeq - conversation.readSeq);
      scheduleDelivered(message.conversationId, message.seq);
    }
  }
  renderConversationList();
  if (state.activeId === message.conversationId) renderMessages({ stickToBottom: true });
}

const deliveredTimers = new Map();

/** Tells the sender we have the message, at most every half second per conversation. */
function scheduleDelivered(conversationId, seq) {
  const entry = deliveredTimers.get(conversationId) || { seq: 0, timer: null };
  entry.seq = Math.max(entry.seq, seq);
  if (!entry.timer) {
    entry.timer = setTimeout(() => {
      deliveredTimers.delete(conversationId);
      socket && socket.send({ type: 'delivered', conversationId, seq: entry.seq });
    }, 500);
  }
  deliveredTimers.set(conversationId, entry);
}

function onReceipt(frame) {
  const conversation = state.conversations.get(frame.conversationId);
  if (!conversation) return;
  const member = conversation.members.find((m) => m.userId === frame.userId);
  if (member) {
    if (frame.kind === 'read') {
      member.readSeq = Math.max(member.readSeq, frame.seq);
      member.deliveredSeq = Math.max(member.deliveredSeq, frame.seq);
    } else {
      member.deliveredSeq = Math.max(member.deliveredSeq, frame.seq);
    }
  }
  if (frame.userId === state.me.id && frame.kind === 'read') {
    conversation.readSeq = Math.max(conversation.readSeq, frame.seq);
    conversation.unreadCount = Math.max(0, conversation.lastSeq - conversation.readSeq);
    renderConversationList();
  }
  if (state.activeId === frame.conversationId) renderMessages({});
}

function onTyping(frame) {
  if (frame.userId === state.me.id) return;
  const typers = state.typing.get(frame.conversationId) || new Map();
  clearTimeout(typers.get(frame.userId));
  if (frame.state === 'start') {
    // The server relays a stop when the typer goes quiet; this is only a safety net.
    typers.set(frame.userId, setTimeout(() => clearTyping(frame.conversationId, frame.userId), 10000));
  } else {
    typers.delete(frame.userId);
  }
  state.typing.set(frame.conversationId, typers);
  renderTyping();
}

function clearTyping(conversationId, userId) {
  const typers = state.typing.get(conversationId);
  if (!typers || !typers.has(userId)) return;
  clearTimeout(typers.get(userId));
  typers.delete(userId);
  renderTyping();
}

async function onConversationEvent(frame) {
  const conversation = frame.conversation;
  if (frame.event === 'removed' || frame.event === 'deleted') {
    state.conversations.delete(conversation.id);
    state.messages.delete(conversation.id);
    if (state.activeId === conversation.id) closeConversationView();
  } else {
    const known = state.conversations.get(conversation.id);
    // Keep our own counters; the event carries the recipient's view, which is the same data.
    upsertConversation(known ? { ...known, ...conversation } : conversation);
    await ensureUsers(conversation.members.map((m) => m.userId)).catch(() => {});
    if (conversation.type === 'direct') refreshPresence().catch(() => {});
    if (state.activeId === conversation.id) {
      renderConversationHeader();
      renderMembers();
    }
  }
  renderConversationList();
}

function onError(frame) {
  if (!frame.ref) return;
  for (const store of state.messages.values()) {
    const pending = store.pending.get(frame.ref);
    if (pending) {
      pending.status = 'failed';
      pending.error = frame.message;
      if (state.activeId) renderMessages({});
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Conversation list

function sortedConversations() {
  return [...state.conversations.values()].sort((a, b) => (b.updatedAt || '').localeCompare(a.updatedAt || ''));
}

function renderConversationList() {
  if (!state.me) return;
  const list = $('#conversation-list');
  const items = sortedConversations().map((conversation) => {
    const name = conversationName(conversation);
    const unread = conversation.unreadCount || 0;
    const last = conversation.lastMessage;
    const preview = last ? (last.senderId === state.me.id ? 'You: ' : (conversation.type === 'group' ? userName(last.senderId) + ': ' : '')) + last.body : 'No messages yet';
    const peer = conversation.type === 'direct' ? peerOf(conversation) : null;
    const online = peer && state.presence.get(peer) && state.presence.get(peer).status === 'online';
    return h('li', {},
      h('button', {
        type: 'button',
        class: 'conversation-item' + (conversation.id === state.activeId ? ' active' : '') + (unread ? ' unread' : ''),
        dataset: { id: conversation.id },
        'aria-current': conversation.id === state.activeId ? 'true' : undefined,
        onclick: () => openConversation(conversation.id),
      },
      h('span', { class: 'avatar', 'aria-hidden': 'true' }, initials(name),
        peer ? h('span', { class: 'presence-dot' + (online ? ' online' : ''), dataset: { presence: online ? 'online' : 'offline' } }) : null),
      h('span', { class: 'item-main' },
        h('span', { class: 'item-top' },
          h('span', { class: 'item-name' }, name),
          h('span', { class: 'item-time' }, shortStamp(last ? last.createdAt : conversation.updatedAt))),
        h('span', { class: 'item-bottom' },
          h('span', { class: 'item-preview' }, preview),
          unread ? h('span', { class: 'badge', 'aria-label': unread + ' unread' }, String(unread)) : null)),
      peer ? h('span', { class: 'visually-hidden' }, online ? ' (online)' : ' (offline)') : null));
  });
  list.replaceChildren(...items);
  $('#no-conversations').hidden = items.length > 0;
  const total = [...state.conversations.values()].reduce((sum, c) => sum + (c.unreadCount || 0), 0);
  document.title = total ? '(' + total + ') Parley' : 'Parley';
}

// ---------------------------------------------------------------------------------------------
// Conversation view

async function openConversation(id) {
  if (!state.conversations.has(id)) return;
  state.activeId = id;
  history.replaceState(null, '', '#/c/' + id);
  document.body.classList.add('viewing-conversation');
  $('#conversation-empty').hidden = true;
  $('#conversation-pane').hidden = false;
  $('#members-panel').hidden = true;
  $('#members-button').setAttribute('aria-expanded', 'false');
  renderConversationHeader();
  renderConversationList();
  renderTyping();
  const store = messageStore(id);
  if (!store.loaded) {
    $('#message-list').replaceChildren();
    await loadOlder(id, true);
    if (state.online) socket.send({ type: 'sync', cursors: { [id]: knownLastSeq(id) } });
  } else {
    renderMessages({ stickToBottom: true, force: true });
  }
  markActiveRead();
  $('#composer-input').focus();
}

function closeConversationView() {
  state.activeId = null;
  document.body.classList.remove('viewing-conversation');
  $('#conversation-pane').hidden = true;
  $('#conversation-empty').hidden = false;
  $('#members-panel').hidden = true;
  if (location.hash) history.replaceState(null, '', location.pathname);
  renderConversationList();
}

function renderConversationHeader() {
  const conversation = state.conversations.get(state.activeId);
  if (!conversation) return;
  $('#conversation-title').textContent = conversationName(conversation);
  let subtitle;
  if (conversation.type === 'group') {
    subtitle = conversation.members.length + (conversation.members.length === 1 ? ' member' : ' members');
  } else {
    const presence = state.presence.get(peerOf(conversation));
    if (presence && presence.status === 'online') subtitle = 'Online';
    else if (presence && presence.lastSeenAt) subtitle = 'Last seen ' + dayLabel(presence.lastSeenAt).toLowerCase() + ' at ' + formatTime(presence.lastSeenAt);
    else subtitle = 'Offline';
  }
  $('#conversation-subtitle').textContent = subtitle;
}

async function loadOlder(id, initial = false) {
  const store = messageStore(id);
  if (store.loading || (!initial && !store.hasOlder)) return;
  store.loading = true;
  $('#history-status').textContent = 'Loading…';
  const oldest = Math.min(...store.bySeq.keys());
  const query = initial || !isFinite(oldest) ? '?limit=' + PAGE : '?before=' + oldest + '&limit=' + PAGE;
  try {
    const page = await api('GET', '/api/v1/conversations/' + id + '/messages' + query);
    await ensureUsers(page.messages.map((m) => m.senderId));
    for (const message of page.messages) store.bySeq.set(message.seq, message);
    store.hasOlder = page.hasMore;
    store.loaded = true;
    if (state.activeId === id) renderMessages(initial ? { stickToBottom: true, force: true } : { keepPosition: true });
  } catch (error) {
    $('#history-status').textContent = 'Could not load messages: ' + error.message;
    store.loading = false;
    return;
  }
  store.loading = false;
  $('#history-status').textContent = store.hasOlder ? '' : 'This is the beginning of the conversation.';
}

/** Status of one of our own messages as the other members see it. */
function ownStatus(conversation, message) {
  const others = conversation.members.filter((m) => m.userId !== state.me.id);
  if (!others.length) return 'sent';
  if (others.every((m) => m.readSeq >= message.seq)) return 'read';
  if (others.every((m) => m.deliveredSeq >= message.seq)) return 'delivered';
  return 'sent';
}

const statusText = { pending: 'Sending…', sent: 'Sent', delivered: 'Delivered', read: 'Read', failed: 'Not sent' };
const statusGlyph = { pending: '◷', sent: '✓', delivered: '✓✓', read: '✓✓', failed: '!' };

function renderMessages({ stickToBottom = false, keepPosition = false, force = false }) {
  const id = state.activeId;
  const conversation = state.conversations.get(id);
  if (!conversation) return;
  const store = messageStore(id);
  const scroller = $('#message-scroller');
  const nearBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120;
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;

  const messages = [...store.bySeq.values()].sort((a, b) => a.seq - b.seq);
  const pending = [...store.pending.values()];
  const rows = [];
  let lastDay = null;
  const addDay = (iso) => {
    const key = dayKey(iso);
    if (key !== lastDay) {
      rows.push(h('li', { class: 'day-separator', role: 'separator' }, h('span', {}, dayLabel(iso))));
      lastDay = key;
    }
  };
  for (const message of messages) {
    addDay(message.createdAt);
    const own = message.senderId === state.me.id;
    rows.push(messageRow({
      own,
      body: message.body,
      time: message.createdAt,
      sender: conversation.type === 'group' && !own ? userName(message.senderId) : null,
      status: own ? ownStatus(conversation, message) : null,
      seq: message.seq,
    }));
  }
  for (const item of pending) {
    addDay(item.createdAt);
    rows.push(messageRow({ own: true, body: item.body, time: item.createdAt, status: item.status, error: item.error, clientMsgId: item.clientMsgId }));
  }
  $('#message-list').replaceChildren(...rows);
  if (keepPosition) scroller.scrollTop = scroller.scrollHeight - fromBottom;
  else if (force || (stickToBottom && nearBottom)) scroller.scrollTop = scroller.scrollHeight;
}

function messageRow({ own, body, time, sender, status, seq, error, clientMsgId }) {
  return h('li', { class: 'message' + (own ? ' own' : ''), dataset: { seq: seq || '', status: status || '', clientMsgId: clientMsgId || '' } },
    h('div', { class: 'bubble' },
      sender ? h('span', { class: 'sender' }, sender) : null,
      h('p', { class: 'body' }, body),
      h('span', { class: 'meta' },
        h('time', { datetime: time }, formatTime(time)),
        status ? h('span', { class: 'status status-' + status, title: statusText[status], 'aria-label': statusText[status] }, statusGlyph[status]) : null),
      error ? h('span', { class: 'send-error' }, error + ' ', h('button', { type: 'button', class: 'link', onclick: () => retry(clientMsgId) }, 'Retry')) : null));
}

function renderTyping() {
  const typers = state.activeId ? state.typing.get(state.activeId) : null;
  const names = typers ? [...typers.keys()].map(userName) : [];
  $('#typing-indicator').textContent =
    names.length === 0 ? '' : names.length === 1 ? names[0] + ' is typing…' : names.slice(0, -1).join(', ') + ' and ' + names.at(-1) + ' are typing…';
}

function markActiveRead() {
  const id = state.activeId;
  const conversation = id && state.conversations.get(id);
  if (!conversation || document.visibilityState !== 'visible') return;
  if (conversation.lastSeq > conversation.readSeq) {
    conversation.readSeq = conversation.lastSeq;
    conversation.unreadCount = 0;
    renderConversationList();
    if (!(socket && socket.send({ type: 'read', conversationId: id, seq: conversation.lastSeq }))) {
      api('POST', '/api/v1/conversations/' + id + '/read', { seq: conversation.lastSeq }).catch(() => {});
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Sending and typing

let lastTypingSent = 0;
let typingIdle = null;

function sendTyping(stateValue) {
  if (!state.activeId || !socket) return;
  socket.send({ type: 'typing', conversationId: state.activeId, state: stateValue });
}

function onComposerInput() {
  const text = $('#composer-input').value;
  autoGrow();
  clearTimeout(typingIdle);
  if (!text.trim()) {
    if (lastTypingSent) { sendTyping('stop'); lastTypingSent = 0; }
    return;
  }
  if (Date.now() - lastTypingSent > 3000) {
    sendTyping('start');
    lastTypingSent = Date.now();
  }
  typingIdle = setTimeout(() => { sendTyping('stop'); lastTypingSent = 0; }, 4000);
}

function autoGrow() {
  const input = $('#composer-input');
  input.style.height = 'auto';
  input.style.height = Math.min(input.scrollHeight, 160) + 'px';
  input.style.overflowY = input.scrollHeight > 160 ? 'auto' : 'hidden';
}

function sendMessage() {
  const input = $('#composer-input');
  const body = input.value;
  if (!body.trim() || !state.activeId) return;
  if (new TextEncoder().encode(body).length > 4000) {
    $('#history-status').textContent = 'That message is too long (4000 bytes at most).';
    return;
  }
  const clientMsgId = crypto.randomUUID();
  const store = messageStore(state.activeId);
  store.pending.set(clientMsgId, { clientMsgId, body, createdAt: new Date().toISOString(), status: 'pending' });
  input.value = '';
  autoGrow();
  clearTimeout(typingIdle);
  lastTypingSent = 0;
  socket && socket.send({ type: 'send', conversationId: state.activeId, clientMsgId, body });
  renderMessages({ force: true });
}

function retry(clientMsgId) {
  for (const [conversationId, store] of state.messages) {
    const pending = store.pending.get(clientMsgId);
    if (!pending) continue;
    pending.status = 'pending';
    pending.error = null;
    socket && socket.send({ type: 'send', conversationId, clientMsgId, body: pending.body });
    renderMessages({});
  }
}

// ---------------------------------------------------------------------------------------------
// Members panel, new chat, new group, join

function myRole(conversation) {
  const me = conversation.members.find((m) => m.userId === state.me.id);
  return me ? me.role : 'member';
}

const rank = { owner: 2, admin: 1, member: 0 };

function renderMembers() {
  const conversation = state.conversations.get(state.activeId);
  if (!conversation) return;
  const role = myRole(conversation);
  const isGroup = conversation.type === 'group';
  $('#invite-info').textContent = isGroup
    ? (conversation.hasPasscode ? 'Others can join with the group code ' + conversation.id + ' and the passcode.' : 'Only members can add people to this group.')
    : '';
  const rows = conversation.members
    .slice()
    .sort((a, b) => rank[b.role] - rank[a.role] || userName(a.userId).localeCompare(userName(b.userId)))
    .map((member) => {
      const canRemove = isGroup && member.userId !== state.me.id && rank[role] >= 1 && rank[member.role] < rank[role];
      return h('li', { class: 'member' },
        h('span', { class: 'avatar small', 'aria-hidden': 'true' }, initials(userName(member.userId))),
        h('span', { class: 'member-name' }, userName(member.userId) + (member.userId === state.me.id ? ' (you)' : '')),
        member.role !== 'member' ? h('span', { class: 'role' }, member.role) : null,
        canRemove ? h('button', { type: 'button', class: 'ghost small', onclick: () => removeMember(member.userId), 'aria-label': 'Remove ' + userName(member.userId) }, 'Remove') : null);
    });
  $('#member-list').replaceChildren(...rows);
  $('#add-member-form').hidden = !(isGroup && rank[role] >= 1);
  $('#leave-button').hidden = !isGroup;
}

async function removeMember(userId) {
  try {
    await api('DELETE', '/api/v1/conversations/' + state.activeId + '/members/' + userId);
  } catch (error) {
    $('#invite-info').textContent = error.message;
  }
}

async function leaveGroup() {
  const id = state.activeId;
  if (!id || !confirm('Leave this group? You will stop receiving its messages.')) return;
  try {
    await api('DELETE', '/api/v1/conversations/' + id + '/members/' + state.me.id);
    state.conversations.delete(id);
    closeConversationView();
  } catch (error) {
    $('#invite-info').textContent = error.message;
  }
}

/** Wires a search box to a result list; `choose(user)` is called with the picked user. */
function userSearch(input, results, choose) {
  const run = debounce(async () => {
    const query = input.value.trim();
    if (!query) return results.replaceChildren();
    try {
      const { users } = await api('GET', '/api/v1/users?query=' + encodeURIComponent(query) + '&limit=10');
      const others = users.filter((u) => u.id !== state.me.id);
      for (const user of others) state.users.set(user.id, user);
      results.replaceChildren(...(others.length ? others.map((user) => h('li', {},
        h('button', { type: 'button', class: 'result', onclick: () => choose(user) },
          h('span', { class: 'avatar small', 'aria-hidden': 'true' }, initials(user.displayName)),
          h('span', {}, user.displayName), h('span', { class: 'hint' }, ' @' + user.username)))) : [h('li', { class: 'hint' }, 'Nobody found.')]));
    } catch (error) {
      results.replaceChildren(h('li', { class: 'hint' }, error.message));
    }
  }, 200);
  input.addEventListener('input', run);
}

let groupMembers = new Map();

function renderChosen() {
  $('#new-group-chosen').replaceChildren(...[...groupMembers.values()].map((user) => h('li', { class: 'chip' },
    user.displayName,
    h('button', { type: 'button', class: 'ghost small', 'aria-label': 'Remove ' + user.displayName, onclick: () => { groupMembers.delete(user.id); renderChosen(); } }, '×'))));
}

function wireApp() {
  $('#signout-button').addEventListener('click', signOut);
  $('#back-button').addEventListener('click', closeConversationView);
  $('#composer').addEventListener('submit', (event) => { event.preventDefault(); sendMessage(); });
  $('#composer-input').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    }
  });
  $('#composer-input').addEventListener('input', onComposerInput);
  $('#message-scroller').addEventListener('scroll', () => {
    if (state.activeId && $('#message-scroller').scrollTop < 80) loadOlder(state.activeId);
  });
  document.addEventListener('visibilitychange', markActiveRead);
  window.addEventListener('offline', () => { $('#offline-banner').hidden = false; });

  $('#members-button').addEventListener('click', () => {
    const panel = $('#members-panel');
    panel.hidden = !panel.hidden;
    $('#members-button').setAttribute('aria-expanded', String(!panel.hidden));
    if (!panel.hidden) renderMembers();
  });
  $('#close-members').addEventListener('click', () => {
    $('#members-panel').hidden = true;
    $('#members-button').setAttribute('aria-expanded', 'false');
  });
  $('#leave-button').addEventListener('click', leaveGroup);
  userSearch($('#add-member-search'), $('#add-member-results'), async (user) => {
    try {
      await api('POST', '/api/v1/conversations/' + state.activeId + '/members', { userIds: [user.id] });
      $('#add-member-search').value = '';
      $('#add-member-results').replaceChildren();
    } catch (error) {
      $('#invite-info').textContent = error.message;
    }
  });

  const newChat = $('#new-chat-dialog');
  $('#new-chat-button').addEventListener('click', () => {
    $('#new-chat-search').value = '';
    $('#new-chat-results').replaceChildren();
    setError(newChat.querySelector('form'), '');
    newChat.showModal();
  });
  userSearch($('#new-chat-search'), $('#new-chat-results'), async (user) => {
    try {
      const { conversation } = await api('POST', '/api/v1/conversations', { type: 'direct', userId: user.id });
      upsertConversation(state.conversations.get(conversation.id) || conversation);
      await refreshPresence().catch(() => {});
      newChat.close();
      openConversation(conversation.id);
    } catch (error) {
      setError(newChat.querySelector('form'), error.message);
    }
  });

  const newGroup = $('#new-group-dialog');
  $('#new-group-button').addEventListener('click', () => {
    $('#new-group-form').reset();
    groupMembers = new Map();
    renderChosen();
    $('#new-group-results').replaceChildren();
    setError($('#new-group-form'), '');
    newGroup.showModal();
  });
  userSearch($('#new-group-search'), $('#new-group-results'), (user) => {
    groupMembers.set(user.id, user);
    renderChosen();
    $('#new-group-search').value = '';
    $('#new-group-results').replaceChildren();
  });
  newGroup.querySelector('.cancel').addEventListener('click', () => newGroup.close());
  $('#new-group-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const data = Object.fromEntries(new FormData(form));
    if (!data.name.trim()) return setError(form, 'Give the group a name.');
    const body = { type: 'group', name: data.name.trim(), memberIds: [...groupMembers.keys()] };
    if (data.passcode) body.passcode = data.passcode;
    await submitting(form, async () => {
      const { conversation } = await api('POST', '/api/v1/conversations', body);
      upsertConversation(state.conversations.get(conversation.id) || conversation);
      newGroup.close();
      openConversation(conversation.id);
    });
  });

  const join = $('#join-dialog');
  $('#join-group-button').addEventListener('click', () => {
    $('#join-form').reset();
    setError($('#join-form'), '');
    join.showModal();
  });
  join.querySelector('.cancel').addEventListener('click', () => join.close());
  $('#join-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const data = Object.fromEntries(new FormData(form));
    const groupId = String(data.groupId || '').trim().toLowerCase();
    if (!/^[0-9a-f-]{36}$/.test(groupId)) return setError(form, 'That does not look like a group code.');
    if (!data.passcode) return setError(form, 'Enter the passcode.');
    await submitting(form, async () => {
      const { conversation } = await api('POST', '/api/v1/conversations/' + groupId + '/join', { passcode: data.passcode });
      upsertConversation(conversation);
      await ensureUsers(conversation.members.map((m) => m.userId));
      join.close();
      renderConversationList();
      openConversation(conversation.id);
    });
  });
}

boot();
