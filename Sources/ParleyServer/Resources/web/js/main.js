// The Parley web client: state, rendering and wiring. Plain ES modules, no build step.

import { closeAccount, wireAccount } from './account.js';
import { api, auth, ApiError, refreshSession, sessionHint } from './api.js';
import { $, h, setError, debounce, formatTime, dayKey, dayLabel, shortStamp, initials } from './dom.js';
import { askNotificationPermission, notify } from './notify.js';
import { RealtimeSocket } from './socket.js';
import { highlightNodes, mentionQuery, preview, splitMentions } from './text.js';
import { formatSize, typeLabel, upload } from './uploads.js';

const PAGE = 50;
/** The reactions offered in the picker (any single emoji is accepted by the server). */
const QUICK_EMOJI = ['👍', '❤️', '😂', '🎉', '😮', '😢', '🙏', '👀'];

const state = {
  me: null,
  conversations: new Map(),
  users: new Map(),
  presence: new Map(),
  messages: new Map(),
  typing: new Map(),
  activeId: null,
  online: false,
  // Message actions: the message whose actions are open (touch) and whose emoji picker is open.
  actionsFor: null,
  pickerFor: null,
  // The seq of the message a jump (reply quote, search hit) landed on, shown highlighted.
  highlightSeq: null,
  // The composer replies to `replyTo` or edits `editing` (a message); `draft` is the text that
  // editing put aside.
  composer: { replyTo: null, editing: null, draft: '' },
  mentionPicker: null,
  search: { query: '', results: [], hasMore: false, token: 0 },
};

let socket = null;

// ---------------------------------------------------------------------------------------------
// Boot and authentication

async function boot() {
  wireAuthForms();
  wireApp();
  // A first visit (or one after signing out) asks the server nothing: there is no session to find.
  if (!sessionHint.present()) return showAuth();
  try {
    const me = await api('GET', '/api/v1/users/me');
    await signedIn(me);
  } catch (error) {
    if (error.status === 401 && await refreshSession()) {
      try { return await signedIn(await api('GET', '/api/v1/users/me')); } catch { /* fall through */ }
    }
    if (error.status === 401) sessionHint.clear();
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
  sessionHint.set();
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
  sessionHint.clear();
  closeAccount();
  if (socket) socket.stop();
  socket = null;
  state.me = null;
  state.conversations.clear();
  state.messages.clear();
  state.typing.clear();
  state.activeId = null;
  resetComposerMode();
  clearSearch();
  $('#search-input').value = '';
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

/**
 * The messages held for a conversation: a contiguous run of seqs. `hasNewer` is set while a jump
 * (to a reply's original or a search hit) shows an older stretch without the newest messages.
 * `changeCursor` is the conversation's change sequence up to which edits, deletions and reactions
 * of the held messages are known (null until history loads); `syncing` while a sync is answered.
 */
function messageStore(id) {
  if (!state.messages.has(id)) {
    state.messages.set(id, {
      bySeq: new Map(), pending: new Map(), hasOlder: true, hasNewer: false, loaded: false, loading: false,
      changeCursor: null, syncing: false, syncSeq: 0,
    });
  }
  return state.messages.get(id);
}

function knownLastSeq(id) {
  const store = messageStore(id);
  let max = 0;
  for (const seq of store.bySeq.keys()) if (seq > max) max = seq;
  return max;
}

/**
 * Stores a version of a message unless the one held is newer. `changeSeq` comes with `updated`
 * frames; a page fetched when the conversation's change sequence was `since` is older than a
 * version an `updated` frame after `since` brought. (Message objects carry no changeSeq.)
 */
function putMessage(store, message, { changeSeq = null, since = null } = {}) {
  const held = store.bySeq.get(message.seq);
  const incoming = changeSeq ?? message.changeSeq ?? null;
  if (held && held.changeSeq != null) {
    if (incoming != null ? held.changeSeq > incoming : since != null && held.changeSeq > since) return false;
  }
  store.bySeq.set(message.seq, incoming != null ? { ...message, changeSeq: incoming } : message);
  return true;
}

function addMessage(message) {
  const store = messageStore(message.conversationId);
  // While an older stretch is shown, newer messages come with the pages that close the gap.
  if (!store.hasNewer || message.seq <= knownLastSeq(message.conversationId)) putMessage(store, message);
  if (message.senderId === state.me.id && message.clientMsgId) store.pending.delete(message.clientMsgId);
  const conversation = state.conversations.get(message.conversationId);
  if (conversation && message.seq >= conversation.lastSeq) {
    conversation.lastSeq = message.seq;
    conversation.lastMessage = message;
    conversation.updatedAt = message.createdAt;
  }
  // Sending reads everything before it: the server moves the sender's read mark with the send.
  if (conversation && message.senderId === state.me.id && message.seq > conversation.readSeq) {
    conversation.readSeq = message.seq;
    conversation.unreadCount = Math.max(0, conversation.lastSeq - conversation.readSeq);
    const mine = (conversation.members || []).find((m) => m.userId === state.me.id);
    if (mine && (mine.readSeq ?? 0) < message.seq) mine.readSeq = message.seq;
  }
}

const mentionsMe = (message) => !message.deletedAt && (message.mentions || []).includes(state.me.id);

// ---------------------------------------------------------------------------------------------
// Real-time frames

function onStatus(online) {
  state.online = online;
  clearTimeout(onStatus.bannerTimer);
  if (online) {
    $('#offline-banner').hidden = true;
    catchUp();
  } else {
    // Syncs in flight died with the socket; catchUp starts them again.
    for (const store of state.messages.values()) store.syncing = false;
    // A short blip is not worth a banner.
    onStatus.bannerTimer = setTimeout(() => { if (!state.online) $('#offline-banner').hidden = false; }, 800);
  }
}

/** After (re)connecting: refresh the list, sync the open conversation, resend what is pending. */
async function catchUp() {
  try { await loadConversations(); } catch { /* the socket will retry */ }
  if (!socket) return;
  const loaded = [...state.messages].filter(([id, store]) => store.loaded && state.conversations.has(id)).map(([id]) => id);
  if (loaded.length) syncConversations(loaded);
  for (const [conversationId, store] of state.messages) {
    for (const pending of store.pending.values()) {
      if (pending.status === 'failed') continue;
      socket.send(sendFrame(conversationId, pending));
    }
  }
  markActiveRead();
}

/**
 * Asks for what the held messages of these conversations missed: new messages after the last
 * held seq and, with a change cursor, the edits, deletions and reactions after it.
 */
function syncConversations(ids) {
  if (!socket) return;
  const cursors = {};
  const changes = {};
  for (const id of ids.slice(0, 200)) {
    const store = messageStore(id);
    const conversation = state.conversations.get(id);
    // An older stretch on show: its changes are wanted, the newer messages are not.
    cursors[id] = store.hasNewer && conversation ? Math.max(knownLastSeq(id), conversation.lastSeq) : knownLastSeq(id);
    if (store.changeCursor != null) changes[id] = store.changeCursor;
  }
  if (!socket.send({ type: 'sync', cursors, changes })) return;
  for (const id of Object.keys(cursors)) {
    const store = messageStore(id);
    store.syncing = true;
    store.syncSeq = cursors[id];
  }
}

function onSynced(frame) {
  const id = frame.conversationId;
  const store = state.messages.get(id);
  const withChanges = store && store.changeCursor != null && frame.changeSeq != null;
  if (withChanges) store.changeCursor = Math.max(store.changeCursor, frame.changeSeq);
  if (frame.hasMore) {
    // More changes (lastSeq null: the seq cursor stays) or more messages after lastSeq.
    const seq = frame.lastSeq ?? (store ? store.syncSeq : null);
    if (seq == null) return;
    const next = { type: 'sync', cursors: { [id]: seq } };
    if (withChanges) next.changes = { [id]: frame.changeSeq };
    if (store) store.syncSeq = seq;
    socket.send(next);
    return;
  }
  if (store) store.syncing = false;
}

function onFrame(frame) {
  switch (frame.type) {
    case 'message': return onMessage(frame.message);
    case 'ack': return onMessage(frame.message);
    case 'updated': return onUpdated(frame);
    case 'synced': return onSynced(frame);
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
  const store = messageStore(message.conversationId);
  const isNew = !store.bySeq.has(message.seq) && message.seq > conversation.readSeq;
  // A gap in what we hold (a frame lost between nodes or across a reconnect): ask for the rest.
  const gap = store.loaded && !store.hasNewer && !store.syncing && message.seq > knownLastSeq(message.conversationId) + 1;
  addMessage(message);
  if (gap) syncConversations([message.conversationId]);
  if (isNew && message.senderId !== state.me.id) {
    clearTyping(message.conversationId, message.senderId);
    const readNow = state.activeId === message.conversationId && document.visibilityState === 'visible';
    if (readNow) {
      markActiveRead();
    } else {
      conversation.unreadCount = Math.max(0, conversation.lastSeq - conversation.readSeq);
      if (mentionsMe(message)) conversation.mentionCount = (conversation.mentionCount || 0) + 1;
      scheduleDelivered(message.conversationId, message.seq);
    }
    if (document.visibilityState === 'hidden') notifyMessage(conversation, message);
  }
  renderConversationList();
  if (state.activeId === message.conversationId) renderMessages({ stickToBottom: true });
}

/** A desktop notification for a message the user is not looking at. */
function notifyMessage(conversation, message) {
  if (message.deletedAt) return;
  const sender = userName(message.senderId);
  const title = mentionsMe(message)
    ? sender + ' mentioned you' + (conversation.type === 'group' ? ' in ' + conversationName(conversation) : '')
    : conversation.type === 'group' ? sender + ' in ' + conversationName(conversation) : sender;
  notify({ title, body: preview(message.body, 140), tag: 'parley-' + conversation.id, onclick: () => openConversation(conversation.id) });
}

/** An edit, deletion or reaction change: the message in its new state replaces the one held. */
function onUpdated(frame) {
  const message = frame.message;
  const id = message.conversationId;
  const conversation = state.conversations.get(id);
  if (!conversation) return;
  conversation.changeSeq = Math.max(conversation.changeSeq || 0, frame.changeSeq);
  const store = state.messages.get(id);
  const held = store && store.bySeq.get(message.seq);
  if (held && putMessage(store, message, { changeSeq: frame.changeSeq })) {
    // An edit can add or drop a mention of us in a message we have not read.
    if (message.senderId !== state.me.id && message.seq > conversation.readSeq) {
      conversation.mentionCount = Math.max(0, (conversation.mentionCount || 0) + mentionsMe(message) - mentionsMe(held));
    }
  }
  if (conversation.lastMessage && conversation.lastMessage.id === message.id) conversation.lastMessage = message;
  // Replies quote the original as it reads now, also when the original itself is not loaded.
  if (store) {
    const quote = message.deletedAt ? '' : message.body.slice(0, 140);
    for (const [seq, reply] of store.bySeq) {
      if (reply.replyTo && reply.replyTo.id === message.id && reply.replyTo.preview !== quote) {
        store.bySeq.set(seq, { ...reply, replyTo: { ...reply.replyTo, preview: quote } });
      }
    }
  }
  if (store && store.changeCursor != null && !store.syncing) {
    if (frame.changeSeq === store.changeCursor + 1) store.changeCursor = frame.changeSeq;
    else if (frame.changeSeq > store.changeCursor + 1) syncConversations([id]);
  }
  const { editing, replyTo } = state.composer;
  if (editing && editing.id === message.id && message.deletedAt) resetComposerMode();
  else if (replyTo && replyTo.id === message.id) {
    if (message.deletedAt) resetComposerMode();
    else { state.composer.replyTo = message; renderComposerMode(); }
  }
  if (state.search && state.search.results) refreshSearchHit(message);
  renderConversationList();
  if (state.activeId === id) renderMessages({});
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
    if (!conversation.unreadCount) conversation.mentionCount = 0;
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
    // Keep our own counters; the event carries the recipient's view, which is the same data
    // (except mentionCount, which only the conversation list computes).
    upsertConversation(known
      ? { ...known, ...conversation, mentionCount: known.mentionCount, changeSeq: Math.max(known.changeSeq || 0, conversation.changeSeq || 0) }
      : conversation);
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
    const mentions = unread ? conversation.mentionCount || 0 : 0;
    const last = conversation.lastMessage;
    const lastText = last ? (last.deletedAt ? 'Message deleted' : last.body) : 'No messages yet';
    const lastPreview = last ? (last.senderId === state.me.id ? 'You: ' : (conversation.type === 'group' ? userName(last.senderId) + ': ' : '')) + lastText : lastText;
    const peer = conversation.type === 'direct' ? peerOf(conversation) : null;
    const online = peer && state.presence.get(peer) && state.presence.get(peer).status === 'online';
    return h('li', {},
      h('button', {
        type: 'button',
        class: 'conversation-item' + (conversation.id === state.activeId ? ' active' : '') + (unread ? ' unread' : ''),
        dataset: { id: conversation.id },
        'aria-current': conversation.id === state.activeId ? 'true' : undefined,
        onclick: () => { askNotificationPermission(); openConversation(conversation.id); },
      },
      h('span', { class: 'avatar', 'aria-hidden': 'true' }, initials(name),
        peer ? h('span', { class: 'presence-dot' + (online ? ' online' : ''), dataset: { presence: online ? 'online' : 'offline' } }) : null),
      h('span', { class: 'item-main' },
        h('span', { class: 'item-top' },
          h('span', { class: 'item-name' }, name),
          h('span', { class: 'item-time' }, shortStamp(last ? last.createdAt : conversation.updatedAt))),
        h('span', { class: 'item-bottom' },
          h('span', { class: 'item-preview' }, lastPreview),
          mentions ? h('span', { class: 'mention-badge', 'aria-label': mentions + (mentions === 1 ? ' mention' : ' mentions') }, '@' + mentions) : null,
          unread ? h('span', { class: 'badge', 'aria-label': unread + ' unread' }, String(unread)) : null)),
      peer ? h('span', { class: 'visually-hidden' }, online ? ' (online)' : ' (offline)') : null));
  });
  list.replaceChildren(...items);
  $('#no-conversations').hidden = items.length > 0 || Boolean(state.search.query);
  const total = [...state.conversations.values()].reduce((sum, c) => sum + (c.unreadCount || 0), 0);
  document.title = total ? '(' + total + ') Parley' : 'Parley';
}

// ---------------------------------------------------------------------------------------------
// Conversation view

/** Opens a conversation; with `focusSeq`, at that message (loading history around it), highlighted. */
async function openConversation(id, { focusSeq = null } = {}) {
  if (!state.conversations.has(id)) return;
  if (state.activeId !== id) {
    resetComposerMode();
    closeMentionPicker();
    state.actionsFor = null;
    state.pickerFor = null;
    state.highlightSeq = null;
  }
  state.activeId = id;
  renderTray();
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
  if (focusSeq != null) {
    if (!store.loaded) $('#message-list').replaceChildren();
    await showAround(id, focusSeq);
  } else if (!store.loaded) {
    $('#message-list').replaceChildren();
    await loadOlder(id, true);
    if (state.online && store.loaded) syncConversations([id]);
  } else if (store.hasNewer) {
    await showLatest(id);
  } else {
    renderMessages({ stickToBottom: true, force: true });
  }
  markActiveRead();
  if (focusSeq == null) $('#composer-input').focus();
}

function closeConversationView() {
  state.activeId = null;
  resetComposerMode();
  closeMentionPicker();
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

/** The conversation's change sequence now: the change cursor that a page fetched now starts. */
function changeSeqNow(id) {
  const conversation = state.conversations.get(id);
  return conversation ? conversation.changeSeq || 0 : 0;
}

function messagesPath(id, query) {
  return '/api/v1/conversations/' + id + '/messages' + query;
}

/** Users a page refers to: senders, the senders of the messages replied to, and mentions. */
function usersOf(messages) {
  return messages.flatMap((m) => [m.senderId, ...(m.replyTo ? [m.replyTo.senderId] : []), ...(m.mentions || [])]);
}

async function loadOlder(id, initial = false) {
  const store = messageStore(id);
  if (store.loading || (!initial && !store.hasOlder)) return;
  store.loading = true;
  $('#history-status').textContent = 'Loading…';
  const oldest = Math.min(...store.bySeq.keys());
  const query = initial || !isFinite(oldest) ? '?limit=' + PAGE : '?before=' + oldest + '&limit=' + PAGE;
  const since = changeSeqNow(id);
  try {
    const page = await api('GET', messagesPath(id, query));
    await ensureUsers(usersOf(page.messages));
    for (const message of page.messages) putMessage(store, message, { since });
    store.hasOlder = page.hasMore;
    if (!store.loaded) store.changeCursor = since;
    store.loaded = true;
    if (state.activeId === id) renderMessages(initial ? { stickToBottom: true, force: true } : { keepPosition: true });
  } catch (error) {
    $('#history-status').textContent = 'Could not load messages: ' + error.message;
    store.loading = false;
    return;
  }
  store.loading = false;
  renderHistoryStatus(id);
}

function renderHistoryStatus(id) {
  if (state.activeId !== id) return;
  const store = messageStore(id);
  $('#history-status').textContent = store.hasOlder ? '' : 'This is the beginning of the conversation.';
  $('#jump-latest').hidden = !store.hasNewer;
}

/** After a jump into older history: the next page towards the newest message. */
async function loadNewer(id) {
  const store = messageStore(id);
  if (store.loading || !store.hasNewer) return;
  store.loading = true;
  const since = changeSeqNow(id);
  try {
    const page = await api('GET', messagesPath(id, '?after=' + knownLastSeq(id) + '&limit=' + PAGE));
    await ensureUsers(usersOf(page.messages));
    for (const message of page.messages) putMessage(store, message, { since });
    store.hasNewer = page.hasMore;
    if (state.activeId === id) renderMessages({});
    // Messages that came live while the gap was open were not kept: fetch them.
    const conversation = state.conversations.get(id);
    if (!store.hasNewer && conversation && conversation.lastSeq > knownLastSeq(id)) syncConversations([id]);
  } catch (error) {
    $('#history-status').textContent = 'Could not load messages: ' + error.message;
  } finally {
    store.loading = false;
  }
  renderHistoryStatus(id);
}

/** Drops an older stretch on show and loads the newest page again. */
async function showLatest(id) {
  const store = messageStore(id);
  if (store.hasNewer) {
    store.bySeq.clear();
    store.hasNewer = false;
    store.hasOlder = true;
    store.loaded = false;
    store.changeCursor = null;
  }
  state.highlightSeq = null;
  if (!store.loaded) {
    await loadOlder(id, true);
    if (state.online && store.loaded) syncConversations([id]);
  } else if (state.activeId === id) {
    renderMessages({ force: true });
  }
  renderHistoryStatus(id);
}

/**
 * Shows message `seq` of a conversation in view, highlighted. A message a little older than what
 * is held is reached by filling the gap; one further away by loading the stretch around it alone
 * (the newer messages then load as the user scrolls down).
 */
async function showAround(id, seq) {
  const store = messageStore(id);
  if (!store.loaded || !store.bySeq.has(seq)) {
    if (store.loading) return;
    store.loading = true;
    const oldest = store.loaded ? Math.min(...store.bySeq.keys()) : Infinity;
    const since = changeSeqNow(id);
    $('#history-status').textContent = 'Loading…';
    try {
      if (isFinite(oldest) && seq < oldest && oldest - seq <= 150) {
        const page = await api('GET', messagesPath(id, '?before=' + oldest + '&limit=' + Math.min(200, oldest - seq + 20)));
        await ensureUsers(usersOf(page.messages));
        for (const message of page.messages) putMessage(store, message, { since });
        store.hasOlder = page.hasMore;
      } else {
        const start = Math.max(0, seq - 20);
        const page = await api('GET', messagesPath(id, '?after=' + start + '&limit=' + PAGE));
        await ensureUsers(usersOf(page.messages));
        store.bySeq.clear();
        for (const message of page.messages) putMessage(store, message, { since });
        store.hasOlder = start > 0;
        store.hasNewer = page.hasMore;
        store.loaded = true;
        store.changeCursor = since;
      }
    } catch (error) {
      $('#history-status').textContent = 'Could not load messages: ' + error.message;
      return;
    } finally {
      store.loading = false;
    }
  }
  if (state.activeId !== id) return;
  state.highlightSeq = seq;
  // The highlight says "here it is"; it goes once the eye has found it.
  clearTimeout(showAround.highlightTimer);
  showAround.highlightTimer = setTimeout(() => {
    if (state.highlightSeq !== seq) return;
    state.highlightSeq = null;
    if (state.activeId === id) renderMessages({});
  }, 4000);
  renderMessages({});
  renderHistoryStatus(id);
  const row = $('#message-list .message[data-seq="' + seq + '"]');
  if (row) row.scrollIntoView({ block: 'center' });
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
    rows.push(messageRow(conversation, message));
  }
  // Pending messages belong after the newest; while an older stretch is shown they wait.
  if (!store.hasNewer) {
    for (const item of pending) {
      addDay(item.createdAt);
      rows.push(pendingRow(item));
    }
  }
  $('#message-list').replaceChildren(...rows);
  $('#jump-latest').hidden = !store.hasNewer;
  if (keepPosition) scroller.scrollTop = scroller.scrollHeight - fromBottom;
  else if (force || (stickToBottom && nearBottom)) scroller.scrollTop = scroller.scrollHeight;
}

function statusMark(status) {
  return status ? h('span', { class: 'status status-' + status, title: statusText[status], 'aria-label': statusText[status] }, statusGlyph[status]) : null;
}

/** A message as stored: body (with mentions) or tombstone, reply quote, reactions and actions. */
function messageRow(conversation, message) {
  const own = message.senderId === state.me.id;
  const deleted = Boolean(message.deletedAt);
  const classes = ['message'];
  if (own) classes.push('own');
  if (deleted) classes.push('deleted');
  if (mentionsMe(message)) classes.push('mentions-me');
  if (state.highlightSeq === message.seq) classes.push('highlighted');
  if (state.actionsFor === message.id && !deleted) classes.push('actions-open');
  const status = own ? ownStatus(conversation, message) : null;
  return h('li', {
    class: classes.join(' '),
    dataset: { seq: message.seq, id: message.id, status: status || '' },
    oncontextmenu: (event) => onMessageContextMenu(event, message),
    onpointerdown: (event) => onMessagePointerDown(event, message),
  },
  // Focusable, so that the keyboard reaches the actions (they show while focus is inside).
  h('div', { class: 'bubble', tabindex: '0', onclick: (event) => onBubbleTap(event, message) },
    conversation.type === 'group' && !own ? h('span', { class: 'sender' }, userName(message.senderId)) : null,
    message.replyTo && !deleted ? replyQuote(conversation.id, message.replyTo) : null,
    deleted ? h('p', { class: 'body tombstone' }, 'Message deleted') : message.body ? h('p', { class: 'body' }, bodyNodes(message)) : null,
    deleted ? null : attachmentNodes(message.attachments),
    h('span', { class: 'meta' },
      message.editedAt && !deleted ? h('span', { class: 'edited', title: 'Edited at ' + formatTime(message.editedAt) }, 'edited') : null,
      h('time', { datetime: message.createdAt }, formatTime(message.createdAt)),
      statusMark(status)),
    !deleted && message.reactions && message.reactions.length ? reactionChips(message) : null),
  deleted ? null : messageActions(conversation, message),
  !deleted && state.pickerFor === message.id ? emojiPicker(message) : null);
}

function pendingRow(item) {
  return h('li', { class: 'message own', dataset: { seq: '', status: item.status || '', clientMsgId: item.clientMsgId } },
    h('div', { class: 'bubble' },
      item.replyTo ? replyQuote(state.activeId, item.replyTo) : null,
      item.body ? h('p', { class: 'body' }, item.body) : null,
      attachmentNodes(item.attachments),
      h('span', { class: 'meta' }, h('time', { datetime: item.createdAt }, formatTime(item.createdAt)), statusMark(item.status)),
      item.error ? h('span', { class: 'send-error' }, item.error + ' ', h('button', { type: 'button', class: 'link', onclick: () => retry(item.clientMsgId) }, 'Retry')) : null));
}

/** Images as thumbnails that open the viewer; other files as chips that download them. */
function attachmentNodes(attachments) {
  if (!attachments || !attachments.length) return null;
  return h('div', { class: 'attachments' }, attachments.map((attachment) => {
    if (attachment.thumbnailUrl) {
      // The box the thumbnail takes before it loads, so the list does not jump.
      const scale = Math.min(1, 240 / Math.max(attachment.width || 240, attachment.height || 240));
      return h('button', {
        type: 'button', class: 'attachment-image', dataset: { id: attachment.id }, 'aria-label': 'Show ' + attachment.name,
        onclick: (event) => { event.stopPropagation(); openViewer(attachment); },
      }, h('img', {
        src: attachment.thumbnailUrl, alt: attachment.name, loading: 'lazy',
        width: Math.round((attachment.width || 240) * scale), height: Math.round((attachment.height || 240) * scale),
      }));
    }
    return h('a', {
      class: 'attachment-file', href: attachment.url, download: attachment.name, dataset: { id: attachment.id },
      title: 'Download ' + attachment.name, onclick: (event) => event.stopPropagation(),
    },
    h('span', { class: 'file-type' }, typeLabel(attachment.contentType, attachment.name)),
    h('span', { class: 'file-name' }, attachment.name),
    h('span', { class: 'file-size' }, formatSize(attachment.size)));
  }));
}

function openViewer(attachment) {
  $('#viewer-image').src = attachment.url;
  $('#viewer-image').alt = attachment.name;
  $('#viewer-name').textContent = attachment.name + ' · ' + formatSize(attachment.size);
  $('#viewer-download').href = attachment.url;
  $('#viewer-download').setAttribute('download', attachment.name);
  $('#viewer').showModal();
}

/** The body as text nodes, with the mentions of members set apart (ours highlighted). */
function bodyNodes(message) {
  if (!message.mentions || !message.mentions.length) return message.body;
  const mentioned = new Map();
  for (const id of message.mentions) {
    const user = state.users.get(id);
    if (user) mentioned.set(user.username.toLowerCase(), id);
  }
  return splitMentions(message.body).map((part) => {
    if (!part.mention || !mentioned.has(part.mention)) return part.text;
    const me = mentioned.get(part.mention) === state.me.id;
    return h('span', { class: 'mention' + (me ? ' mention-me' : ''), title: userName(mentioned.get(part.mention)) }, part.text);
  });
}

/** The message a reply answers, as it reads now if we hold it; a click goes there. */
function replyQuote(conversationId, reference) {
  const held = messageStore(conversationId).bySeq.get(reference.seq);
  const text = held ? (held.deletedAt ? '' : held.body) : reference.preview;
  const sender = userName(reference.senderId);
  return h('button', {
    type: 'button',
    class: 'reply-quote',
    dataset: { seq: reference.seq },
    'aria-label': 'Reply to ' + sender + ': ' + (text ? preview(text) : 'message deleted') + '. Show it.',
    onclick: (event) => { event.stopPropagation(); showAround(conversationId, reference.seq); },
  },
  h('span', { class: 'quote-sender' }, sender),
  h('span', { class: 'quote-preview' + (text ? '' : ' tombstone') }, text ? preview(text) : 'Message deleted'));
}

function reactedWith(message, emoji) {
  const reaction = (message.reactions || []).find((r) => r.emoji === emoji);
  return Boolean(reaction && reaction.userIds.includes(state.me.id));
}

function reactionChips(message) {
  return h('div', { class: 'reactions' }, message.reactions.map((reaction) => {
    const mine = reaction.userIds.includes(state.me.id);
    const names = reaction.userIds.map((id) => (id === state.me.id ? 'You' : userName(id)));
    const more = reaction.count - reaction.userIds.length;
    return h('button', {
      type: 'button',
      class: 'reaction' + (mine ? ' mine' : ''),
      'aria-pressed': String(mine),
      dataset: { emoji: reaction.emoji },
      title: names.join(', ') + (more > 0 ? ' and ' + more + ' more' : ''),
      'aria-label': reaction.emoji + ' ' + reaction.count + (mine ? ', including you' : '') + '. ' + (mine ? 'Remove your reaction' : 'React too'),
      onclick: (event) => { event.stopPropagation(); setReaction(message, reaction.emoji, !mine); },
    }, h('span', { class: 'reaction-emoji', 'aria-hidden': 'true' }, reaction.emoji), h('span', { class: 'reaction-count' }, String(reaction.count)));
  }));
}

function canDelete(conversation, message) {
  return message.senderId === state.me.id || (conversation.type === 'group' && rank[myRole(conversation)] >= 1);
}

/** Reply, react, edit, delete: shown on hover or focus, or after a long press (touch). */
function messageActions(conversation, message) {
  const own = message.senderId === state.me.id;
  const action = (name, label, run, extra = {}) => h('button', {
    type: 'button', class: 'ghost small', dataset: { action: name }, onclick: (event) => { event.stopPropagation(); run(); }, ...extra,
  }, label);
  return h('div', { class: 'message-actions', role: 'toolbar', 'aria-label': 'Message actions' },
    action('reply', 'Reply', () => startReply(message)),
    action('react', 'React', () => togglePicker(message.id), { 'aria-expanded': String(state.pickerFor === message.id) }),
    own ? action('edit', 'Edit', () => startEdit(message)) : null,
    canDelete(conversation, message) ? action('delete', 'Delete', () => deleteMessage(message), { class: 'ghost small danger-text' }) : null);
}

function emojiPicker(message) {
  return h('div', { class: 'emoji-picker', role: 'group', 'aria-label': 'Add a reaction' }, QUICK_EMOJI.map((emoji) => h('button', {
    type: 'button',
    class: 'emoji' + (reactedWith(message, emoji) ? ' mine' : ''),
    dataset: { emoji },
    'aria-label': 'React with ' + emoji,
    onclick: (event) => {
      event.stopPropagation();
      state.pickerFor = null;
      state.actionsFor = null;
      setReaction(message, emoji, !reactedWith(message, emoji));
    },
  }, emoji)));
}

// ---------------------------------------------------------------------------------------------
// Message actions

let longPress = null;
let suppressTap = false;
let lastPointerType = matchMedia('(hover: hover)').matches ? 'mouse' : 'touch';

/** Hover shows message actions only while a mouse is in use (a laptop may have a touch screen too). */
function trackPointer(event) {
  if (event.pointerType === lastPointerType) return;
  lastPointerType = event.pointerType;
  document.body.classList.toggle('mouse', lastPointerType === 'mouse');
}

function openActions(messageId) {
  state.actionsFor = messageId;
  state.pickerFor = null;
  renderMessages({});
}

function closeActions() {
  if (state.actionsFor === null && state.pickerFor === null) return;
  state.actionsFor = null;
  state.pickerFor = null;
  if (state.activeId) renderMessages({});
}

const interactive = (target) => target.closest('button, a, input, textarea, .message-actions, .emoji-picker');

/** A long press on a touch screen opens the actions (Android reports it as a context menu too). */
function onMessageContextMenu(event, message) {
  if ((event.pointerType || lastPointerType) === 'mouse' || message.deletedAt || interactive(event.target)) return;
  event.preventDefault();
  clearTimeout(longPress);
  suppressTap = true;
  openActions(message.id);
}

function onMessagePointerDown(event, message) {
  suppressTap = false;
  if (event.pointerType === 'mouse' || message.deletedAt || interactive(event.target)) return;
  const start = { x: event.clientX, y: event.clientY };
  clearTimeout(longPress);
  const cancel = (e) => {
    if (e.type === 'pointermove' && Math.hypot(e.clientX - start.x, e.clientY - start.y) < 10) return;
    clearTimeout(longPress);
    window.removeEventListener('pointermove', cancel);
    window.removeEventListener('pointerup', cancel);
    window.removeEventListener('pointercancel', cancel);
  };
  window.addEventListener('pointermove', cancel);
  window.addEventListener('pointerup', cancel);
  window.addEventListener('pointercancel', cancel);
  longPress = setTimeout(() => {
    suppressTap = true;
    openActions(message.id);
  }, 450);
}

/** On a touch screen a tap on a message toggles its actions. */
function onBubbleTap(event, message) {
  if (suppressTap) {
    suppressTap = false;
    return;
  }
  if (message.deletedAt || interactive(event.target) || (event.pointerType || lastPointerType) === 'mouse') return;
  event.stopPropagation();
  if (state.actionsFor === message.id) closeActions();
  else openActions(message.id);
}

function togglePicker(messageId) {
  state.pickerFor = state.pickerFor === messageId ? null : messageId;
  renderMessages({});
}

function messageURL(message) {
  return '/api/v1/conversations/' + message.conversationId + '/messages/' + message.id;
}

async function setReaction(message, emoji, present) {
  try {
    await api(present ? 'PUT' : 'DELETE', messageURL(message) + '/reactions/' + encodeURIComponent(emoji));
  } catch (error) {
    $('#history-status').textContent = 'Could not react: ' + error.message;
  }
  // The `updated` frame that follows shows the change on every device, this one included.
}

async function deleteMessage(message) {
  closeActions();
  if (!confirm(message.senderId === state.me.id ? 'Delete this message for everyone?' : 'Delete ' + userName(message.senderId) + '’s message for everyone?')) return;
  try {
    await api('DELETE', messageURL(message));
    // Show the tombstone now; the `updated` frame brings the same.
    const store = messageStore(message.conversationId);
    if (store.bySeq.get(message.seq)) {
      putMessage(store, { ...message, body: '', deletedAt: new Date().toISOString(), mentions: [], reactions: [], changeSeq: undefined });
    }
    if (state.activeId === message.conversationId) renderMessages({});
  } catch (error) {
    $('#history-status').textContent = 'Could not delete: ' + error.message;
  }
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
    conversation.mentionCount = 0;
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
  updateMentionPicker();
  if (state.composer.editing) return;
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

function tooLong(body) {
  if (new TextEncoder().encode(body).length <= 4000) return false;
  $('#history-status').textContent = 'That message is too long (4000 bytes at most).';
  return true;
}

function sendFrame(conversationId, pending) {
  const frame = { type: 'send', conversationId, clientMsgId: pending.clientMsgId, body: pending.body };
  if (pending.replyTo) frame.replyToId = pending.replyTo.id;
  if (pending.attachments && pending.attachments.length) frame.attachmentIds = pending.attachments.map((a) => a.id);
  return frame;
}

// ---------------------------------------------------------------------------------------------
// Files to send: each uploads as soon as it is picked, dropped or pasted; the message that carries
// them goes once they are all up.

const trays = new Map();
let trayKey = 0;

function tray(id = state.activeId) {
  if (!trays.has(id)) trays.set(id, []);
  return trays.get(id);
}

function addFiles(files) {
  const id = state.activeId;
  if (!id || state.composer.editing) return;
  const items = tray(id);
  for (const file of files) {
    if (items.length >= 10) {
      $('#history-status').textContent = 'A message can carry 10 files at most.';
      break;
    }
    const item = { key: ++trayKey, name: file.name || 'pasted image', size: file.size, progress: 0, status: 'uploading', error: null };
    const handle = upload(file, (progress) => {
      item.progress = progress;
      renderTray();
    });
    item.cancel = handle.cancel;
    handle.done.then((attachment) => {
      item.status = 'ready';
      item.attachment = attachment;
    }, (error) => {
      item.status = error.code === 'cancelled' ? 'cancelled' : 'failed';
      item.error = error.message;
    }).finally(() => {
      if (item.status === 'cancelled') items.splice(items.indexOf(item), 1);
      renderTray();
      if (state.sendWhenUploaded === id && items.every((i) => i.status !== 'uploading')) {
        state.sendWhenUploaded = null;
        if (state.activeId === id && items.every((i) => i.status === 'ready')) sendMessage();
      }
    });
    items.push(item);
  }
  renderTray();
}

function removeFile(item) {
  const items = tray();
  if (item.status === 'uploading') item.cancel();
  const at = items.indexOf(item);
  if (at >= 0) items.splice(at, 1);
  renderTray();
}

function renderTray() {
  const items = state.activeId ? tray() : [];
  const list = $('#attachment-tray');
  list.hidden = items.length === 0;
  list.replaceChildren(...items.map((item) => h('li', {
    class: 'tray-item ' + item.status, dataset: { name: item.name, status: item.status },
  },
  h('span', { class: 'file-type' }, typeLabel(item.attachment ? item.attachment.contentType : '', item.name)),
  h('span', { class: 'file-name' }, item.name),
  h('span', { class: 'file-size' }, formatSize(item.size)),
  item.status === 'uploading'
    ? h('progress', { max: '1', value: String(item.progress), 'aria-label': 'Uploading ' + item.name }) : null,
  item.error ? h('span', { class: 'upload-error', role: 'alert' }, item.error) : null,
  h('button', {
    type: 'button', class: 'ghost small', onclick: () => removeFile(item),
    'aria-label': (item.status === 'uploading' ? 'Cancel ' : 'Remove ') + item.name,
  }, '×'))));
  $('#send-button').textContent = state.sendWhenUploaded ? 'Sending…' : 'Send';
}

function sendMessage() {
  askNotificationPermission();
  if (state.composer.editing) return saveEdit();
  const input = $('#composer-input');
  const body = input.value;
  if (!state.activeId) return;
  const files = tray();
  if (files.some((item) => item.status === 'failed')) {
    $('#history-status').textContent = 'Remove the files that could not be uploaded first.';
    return;
  }
  if (files.some((item) => item.status === 'uploading')) {
    // Sent as soon as the last upload is done.
    state.sendWhenUploaded = state.activeId;
    renderTray();
    return;
  }
  const attachments = files.map((item) => item.attachment);
  if (!body.trim() && !attachments.length) return;
  if (tooLong(body)) return;
  const id = state.activeId;
  trays.set(id, []);
  renderTray();
  const clientMsgId = crypto.randomUUID();
  const store = messageStore(id);
  const replyTo = state.composer.replyTo;
  const pending = { clientMsgId, body, createdAt: new Date().toISOString(), status: 'pending', attachments };
  if (replyTo) pending.replyTo = { id: replyTo.id, seq: replyTo.seq, senderId: replyTo.senderId, preview: replyTo.body.slice(0, 140) };
  store.pending.set(clientMsgId, pending);
  input.value = '';
  autoGrow();
  resetComposerMode();
  clearTimeout(typingIdle);
  lastTypingSent = 0;
  socket && socket.send(sendFrame(id, pending));
  // A new message goes after the newest: leave an older stretch for the latest page.
  if (store.hasNewer) showLatest(id);
  else renderMessages({ force: true });
}

function retry(clientMsgId) {
  for (const [conversationId, store] of state.messages) {
    const pending = store.pending.get(clientMsgId);
    if (!pending) continue;
    pending.status = 'pending';
    pending.error = null;
    socket && socket.send(sendFrame(conversationId, pending));
    renderMessages({});
  }
}

// ---------------------------------------------------------------------------------------------
// Composer modes: replying and editing

function renderComposerMode() {
  const { replyTo, editing } = state.composer;
  const bar = $('#composer-context');
  bar.hidden = !replyTo && !editing;
  bar.classList.toggle('editing', Boolean(editing));
  if (editing) {
    $('#composer-context-label').textContent = 'Editing message';
    $('#composer-context-preview').textContent = 'Enter saves, Esc cancels';
  } else if (replyTo) {
    $('#composer-context-label').textContent = 'Replying to ' + userName(replyTo.senderId);
    $('#composer-context-preview').textContent = preview(replyTo.body, 80);
  }
  $('#send-button').textContent = editing ? 'Save' : 'Send';
  $('#composer').classList.toggle('editing', Boolean(editing));
}

function focusComposerEnd() {
  const input = $('#composer-input');
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

function startReply(message) {
  if (state.composer.editing) resetComposerMode();
  state.composer.replyTo = message;
  state.actionsFor = null;
  state.pickerFor = null;
  renderComposerMode();
  renderMessages({});
  focusComposerEnd();
}

function startEdit(message) {
  const input = $('#composer-input');
  if (!state.composer.editing) state.composer.draft = input.value;
  state.composer.editing = message;
  state.composer.replyTo = null;
  state.actionsFor = null;
  state.pickerFor = null;
  input.value = message.body;
  autoGrow();
  closeMentionPicker();
  renderComposerMode();
  renderMessages({});
  focusComposerEnd();
}

/** Leaves reply or edit mode; an edit puts back the draft it set aside. */
function resetComposerMode() {
  if (state.composer.editing) {
    $('#composer-input').value = state.composer.draft;
    autoGrow();
  }
  state.composer = { replyTo: null, editing: null, draft: '' };
  renderComposerMode();
}

async function saveEdit() {
  const message = state.composer.editing;
  const body = $('#composer-input').value;
  if (!body.trim()) {
    $('#history-status').textContent = 'A message cannot be empty. To remove it, delete it.';
    return;
  }
  if (tooLong(body)) return;
  resetComposerMode();
  if (body === message.body) return;
  try {
    const { message: edited } = await api('PATCH', messageURL(message), { body });
    const store = messageStore(edited.conversationId);
    // The `updated` frame brings the same state with its change sequence; if it came first, a
    // later reaction may already be in the held copy, which this answer must not undo.
    const held = store.bySeq.get(edited.seq);
    if (held && held.changeSeq == null) putMessage(store, edited);
    if (state.activeId === edited.conversationId) renderMessages({});
  } catch (error) {
    $('#history-status').textContent = 'Could not save the edit: ' + error.message;
  }
}

/** ↑ in an empty composer: edit our newest message. */
function editLastOwn() {
  const store = state.activeId && messageStore(state.activeId);
  if (!store) return false;
  const own = [...store.bySeq.values()].filter((m) => m.senderId === state.me.id && !m.deletedAt).sort((a, b) => b.seq - a.seq)[0];
  if (!own) return false;
  startEdit(own);
  return true;
}

// ---------------------------------------------------------------------------------------------
// @mentions in the composer

function updateMentionPicker() {
  const input = $('#composer-input');
  const conversation = state.conversations.get(state.activeId);
  const typed = conversation && input.selectionStart === input.selectionEnd ? mentionQuery(input.value, input.selectionStart) : null;
  if (!typed) return closeMentionPicker();
  const query = typed.query.toLowerCase();
  const users = conversation.members
    .map((m) => state.users.get(m.userId))
    .filter((u) => u && u.id !== state.me.id && (u.username.toLowerCase().startsWith(query) || u.displayName.toLowerCase().startsWith(query)))
    .sort((a, b) => a.username.localeCompare(b.username))
    .slice(0, 8);
  if (!users.length) return closeMentionPicker();
  const previous = state.mentionPicker;
  const index = previous && previous.start === typed.start ? Math.min(previous.index, users.length - 1) : 0;
  state.mentionPicker = { start: typed.start, end: input.selectionStart, users, index };
  renderMentionPicker();
}

function renderMentionPicker() {
  const picker = state.mentionPicker;
  const list = $('#mention-suggestions');
  const input = $('#composer-input');
  if (!picker) {
    list.hidden = true;
    list.replaceChildren();
    input.removeAttribute('aria-activedescendant');
    return;
  }
  list.replaceChildren(...picker.users.map((user, i) => h('li', {
    id: 'mention-option-' + i,
    role: 'option',
    class: 'mention-option',
    'aria-selected': String(i === picker.index),
    dataset: { username: user.username },
    // Keep the focus in the composer.
    onmousedown: (event) => event.preventDefault(),
    onclick: () => insertMention(user),
  }, h('span', { class: 'avatar small', 'aria-hidden': 'true' }, initials(user.displayName)),
  h('span', {}, user.displayName), h('span', { class: 'hint' }, ' @' + user.username))));
  list.hidden = false;
  input.setAttribute('aria-activedescendant', 'mention-option-' + picker.index);
}

function closeMentionPicker() {
  if (!state.mentionPicker && $('#mention-suggestions').hidden) return;
  state.mentionPicker = null;
  renderMentionPicker();
}

function insertMention(user) {
  const picker = state.mentionPicker;
  if (!picker) return;
  const input = $('#composer-input');
  const text = '@' + user.username + ' ';
  input.value = input.value.slice(0, picker.start) + text + input.value.slice(picker.end);
  const caret = picker.start + text.length;
  input.focus();
  input.setSelectionRange(caret, caret);
  closeMentionPicker();
  autoGrow();
}

/** Keys in the composer: the mention list first, then edit mode, then sending. */
function onComposerKeyDown(event) {
  if (event.isComposing) return;
  const picker = state.mentionPicker;
  if (picker) {
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      event.preventDefault();
      const step = event.key === 'ArrowDown' ? 1 : -1;
      picker.index = (picker.index + step + picker.users.length) % picker.users.length;
      return renderMentionPicker();
    }
    if ((event.key === 'Enter' && !event.shiftKey) || event.key === 'Tab') {
      event.preventDefault();
      return insertMention(picker.users[picker.index]);
    }
    if (event.key === 'Escape') {
      event.preventDefault();
      return closeMentionPicker();
    }
  }
  if (event.key === 'Escape' && (state.composer.editing || state.composer.replyTo)) {
    event.preventDefault();
    return resetComposerMode();
  }
  if (event.key === 'ArrowUp' && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey
      && event.currentTarget.value === '' && !state.composer.editing) {
    if (editLastOwn()) event.preventDefault();
    return;
  }
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendMessage();
  }
}

// ---------------------------------------------------------------------------------------------
// Search

function searchable(query) {
  return /[\p{L}\p{N}]/u.test(query) && new TextEncoder().encode(query).length <= 256;
}

function clearSearch() {
  state.search = { query: '', results: [], hasMore: false, token: state.search.token + 1 };
  renderSearch();
}

async function runSearch(query, more = false) {
  query = query.trim();
  if (!query) return clearSearch();
  // Enter and the typing pause both ask for the same search: once is enough.
  if (!more && query === state.search.query && (state.search.loading || state.search.results.length)) return;
  const token = ++state.search.token;
  if (!more) state.search = { query, results: [], hasMore: false, token };
  if (!searchable(query)) {
    state.search.error = new TextEncoder().encode(query).length > 256 ? 'That search is too long.' : 'Search for a word or a number.';
    return renderSearch();
  }
  state.search.error = null;
  state.search.loading = true;
  renderSearch();
  const before = more && state.search.results.length ? '&before=' + state.search.results.at(-1).message.id : '';
  try {
    const page = await api('GET', '/api/v1/search?q=' + encodeURIComponent(query) + '&limit=20' + before);
    if (token !== state.search.token) return;
    await ensureUsers(page.results.map((hit) => hit.message.senderId)).catch(() => {});
    state.search.results = more ? [...state.search.results, ...page.results] : page.results;
    state.search.hasMore = page.hasMore;
  } catch (error) {
    if (token !== state.search.token) return;
    state.search.error = error.message;
  }
  state.search.loading = false;
  renderSearch();
}

/**
 * A search hit whose message was edited or deleted while the results are shown: a deleted message
 * leaves the list; an edited one shows its new text (its old highlight would quote words it no
 * longer has).
 */
function refreshSearchHit(message) {
  const index = state.search.results.findIndex((hit) => hit.message.id === message.id);
  if (index < 0) return;
  if (message.deletedAt) state.search.results.splice(index, 1);
  else state.search.results[index] = { message, highlight: preview(message.body, 200).replace(/[<>&]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;' })[c]) };
  renderSearch();
}

function renderSearch() {
  const { query, results, hasMore, error, loading } = state.search;
  const active = Boolean(query);
  $('#search-panel').hidden = !active;
  $('#conversation-list').hidden = active;
  if (!active) {
    $('#search-results').replaceChildren();
    $('#no-conversations').hidden = !state.me || state.conversations.size > 0;
    return;
  }
  $('#no-conversations').hidden = true;
  $('#search-status').textContent = error || (loading && !results.length ? 'Searching…'
    : results.length ? results.length + (hasMore ? '+' : '') + (results.length === 1 ? ' message' : ' messages') : 'No messages found.');
  $('#search-results').replaceChildren(...results.map((hit) => {
    const message = hit.message;
    const conversation = state.conversations.get(message.conversationId);
    return h('li', {},
      h('button', {
        type: 'button',
        class: 'search-hit',
        dataset: { id: message.id, seq: message.seq, conversationId: message.conversationId },
        onclick: () => openConversation(message.conversationId, { focusSeq: message.seq }),
      },
      h('span', { class: 'item-top' },
        h('span', { class: 'item-name' }, conversation ? conversationName(conversation) : 'Conversation'),
        h('span', { class: 'item-time' }, shortStamp(message.createdAt))),
      h('span', { class: 'hit-sender' }, message.senderId === state.me.id ? 'You' : userName(message.senderId)),
      h('span', { class: 'hit-snippet' }, highlightNodes(hit.highlight))));
  }));
  $('#search-more').hidden = !hasMore || loading;
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
  wireAccount(() => state.me);
  $('#back-button').addEventListener('click', closeConversationView);
  $('#composer').addEventListener('submit', (event) => { event.preventDefault(); sendMessage(); });
  $('#attach-button').addEventListener('click', () => $('#file-input').click());
  $('#file-input').addEventListener('change', (event) => {
    addFiles([...event.target.files]);
    event.target.value = '';
  });
  // Images pasted into the composer, and files dropped anywhere on the conversation.
  $('#composer-input').addEventListener('paste', (event) => {
    const files = [...(event.clipboardData ? event.clipboardData.files : [])];
    if (!files.length) return;
    event.preventDefault();
    addFiles(files);
  });
  const pane = $('#message-scroller').parentElement;
  pane.addEventListener('dragover', (event) => {
    if (!state.activeId || !event.dataTransfer || ![...event.dataTransfer.types].includes('Files')) return;
    event.preventDefault();
    pane.classList.add('dropping');
  });
  pane.addEventListener('dragleave', (event) => { if (!pane.contains(event.relatedTarget)) pane.classList.remove('dropping'); });
  pane.addEventListener('drop', (event) => {
    pane.classList.remove('dropping');
    if (!event.dataTransfer || !event.dataTransfer.files.length) return;
    event.preventDefault();
    addFiles([...event.dataTransfer.files]);
  });
  $('#viewer-close').addEventListener('click', () => $('#viewer').close());
  $('#viewer').addEventListener('click', (event) => { if (event.target === $('#viewer')) $('#viewer').close(); });
  $('#composer-input').addEventListener('keydown', onComposerKeyDown);
  $('#composer-input').addEventListener('input', onComposerInput);
  $('#composer-input').addEventListener('click', updateMentionPicker);
  $('#composer-input').addEventListener('blur', closeMentionPicker);
  $('#composer-cancel').addEventListener('click', () => { resetComposerMode(); $('#composer-input').focus(); });
  $('#jump-latest').addEventListener('click', () => state.activeId && showLatest(state.activeId));
  $('#message-scroller').addEventListener('scroll', () => {
    const scroller = $('#message-scroller');
    if (!state.activeId) return;
    if (scroller.scrollTop < 80) loadOlder(state.activeId);
    if (scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80) loadNewer(state.activeId);
  });
  document.body.classList.toggle('mouse', lastPointerType === 'mouse');
  document.addEventListener('pointermove', trackPointer, { passive: true });
  document.addEventListener('pointerdown', trackPointer, { passive: true });
  // Open message actions close when the user turns to something else.
  document.addEventListener('click', (event) => {
    if (!event.target.closest || !event.target.closest('.message.actions-open, .emoji-picker')) closeActions();
  });
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && (state.actionsFor || state.pickerFor)) closeActions();
  });

  const searchInput = $('#search-input');
  const searchSoon = debounce(() => runSearch(searchInput.value), 300);
  searchInput.addEventListener('input', () => (searchInput.value.trim() ? searchSoon() : clearSearch()));
  $('#search-form').addEventListener('submit', (event) => { event.preventDefault(); runSearch(searchInput.value); });
  $('#search-more').addEventListener('click', () => runSearch(state.search.query, true));
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
