// The Account dialog: changing the password, and the signed-in sessions (devices and browsers)
// with a way to sign each of the others out.

import { api, ApiError } from './api.js';
import { $, h, setError } from './dom.js';

const MIN_PASSWORD = 8;
const stampFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/** Wires the Account button and dialog; `me()` returns the signed-in user (for password managers). */
export function wireAccount(me) {
  const dialog = $('#account-dialog');
  const opener = $('#account-button');
  opener.addEventListener('click', () => openAccount(me()));
  $('#account-close').addEventListener('click', () => dialog.close());
  // Esc closes the dialog natively (a cancel, then close); focus goes back to the button either way.
  dialog.addEventListener('close', () => { if (opener.isConnected && !opener.closest('[hidden]')) opener.focus(); });
  $('#password-form').addEventListener('submit', changePassword);
}

/** Closes the dialog, e.g. when the session ends while it is open. */
export function closeAccount() {
  const dialog = $('#account-dialog');
  if (dialog.open) dialog.close();
}

function openAccount(user) {
  const form = $('#password-form');
  // The account name for password managers; as the default value it survives reset().
  form.elements.username.defaultValue = user ? user.username : '';
  form.reset();
  setError(form, '');
  $('#password-status').textContent = '';
  $('#session-list').replaceChildren();
  $('#account-dialog').showModal();
  loadSessions();
}

// ---------------------------------------------------------------------------------------------
// Password

async function changePassword(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const data = new FormData(form);
  const currentPassword = String(data.get('currentPassword') || '');
  const newPassword = String(data.get('newPassword') || '');
  const confirmation = String(data.get('confirmPassword') || '');
  $('#password-status').textContent = '';
  if (!currentPassword) return setError(form, 'Enter your current password.');
  // The server counts bytes of UTF-8 (8 to 72), not characters.
  if (new TextEncoder().encode(newPassword).length < MIN_PASSWORD) return setError(form, 'The new password needs at least 8 characters.');
  if (newPassword !== confirmation) return setError(form, 'The new password and its confirmation do not match.');
  setError(form, '');
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    await api('PUT', '/api/v1/users/me/password', { currentPassword, newPassword });
    form.reset();
    $('#password-status').textContent = 'Password changed. Your other sessions were signed out.';
    await loadSessions();
  } catch (error) {
    setError(form, error instanceof ApiError ? error.message : 'Something went wrong. Try again.');
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Sessions

let loadToken = 0;

async function loadSessions() {
  const token = ++loadToken;
  const status = $('#sessions-status');
  status.textContent = 'Loading…';
  try {
    const { sessions } = await api('GET', '/api/v1/sessions');
    if (token !== loadToken) return;
    // This device first; the others as the server orders them (most recently used first).
    const ordered = [...sessions.filter((s) => s.current), ...sessions.filter((s) => !s.current)];
    $('#session-list').replaceChildren(...ordered.map(sessionRow));
    status.textContent = '';
  } catch (error) {
    if (token !== loadToken) return;
    status.textContent = error instanceof ApiError ? error.message : 'Could not load your sessions.';
  }
}

function sessionRow(session) {
  const device = deviceName(session.userAgent);
  const when = session.lastUsedAt ? 'Last active ' + stamp(session.lastUsedAt) : 'Signed in ' + stamp(session.createdAt);
  return h('li', { class: 'session', dataset: { id: session.id, current: String(session.current) } },
    h('div', { class: 'session-main' },
      h('span', { class: 'session-device', title: session.userAgent || undefined }, device),
      session.current ? h('span', { class: 'session-current' }, 'This device') : null,
      h('span', { class: 'session-when' }, when)),
    session.current ? null : h('button', {
      type: 'button', class: 'danger small', 'aria-label': 'Sign out ' + device,
      onclick: (event) => signOutSession(session, device, event.currentTarget),
    }, 'Sign out'));
}

async function signOutSession(session, device, button) {
  const status = $('#sessions-status');
  button.disabled = true;
  try {
    await api('DELETE', '/api/v1/sessions/' + encodeURIComponent(session.id));
  } catch (error) {
    // Already gone (signed out elsewhere, or expired): the row goes all the same.
    if (!(error instanceof ApiError && error.status === 404)) {
      button.disabled = false;
      status.textContent = error instanceof ApiError ? error.message : 'Could not sign that session out.';
      return;
    }
  }
  const row = button.closest('.session');
  if (row) row.remove();
  status.textContent = 'Signed out ' + device + '.';
  // The focused button is gone: keep the keyboard in the list rather than at the top of the page.
  $('#sessions-title').focus();
}

function stamp(iso) {
  return iso ? stampFormat.format(new Date(iso)) : '';
}

/**
 * A readable name for a user agent string: "Chrome on Linux", "Safari on iOS". Unrecognised
 * strings are shown as they are (shortened); none at all is "Unknown device".
 */
export function deviceName(userAgent) {
  const ua = (userAgent || '').trim();
  if (!ua) return 'Unknown device';
  const browser = /Edg(e|A|iOS)?\//.test(ua) ? 'Edge'
    : /OPR\/|Opera/.test(ua) ? 'Opera'
    : /SamsungBrowser\//.test(ua) ? 'Samsung Internet'
    : /Firefox\/|FxiOS\//.test(ua) ? 'Firefox'
    : /Chrome\/|CriOS\/|Chromium\//.test(ua) ? 'Chrome'
    : /Version\/.*Safari\//.test(ua) ? 'Safari'
    : null;
  const system = /iPhone|iPad|iPod/.test(ua) ? 'iOS'
    : /Android/.test(ua) ? 'Android'
    : /Windows/.test(ua) ? 'Windows'
    : /CrOS/.test(ua) ? 'ChromeOS'
    : /Macintosh|Mac OS X/.test(ua) ? 'macOS'
    : /Linux/.test(ua) ? 'Linux'
    : null;
  if (browser) return system ? browser + ' on ' + system : browser;
  return ua.length > 80 ? ua.slice(0, 79) + '…' : ua;
}
