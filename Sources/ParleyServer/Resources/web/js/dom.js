// Small DOM helpers. Text always goes in as text nodes: nothing a user typed is ever parsed as HTML.

/** Creates an element: h('li', { class: 'x', onclick: fn, dataset: { id } }, 'text', child). */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') element.className = value;
    else if (key === 'dataset') Object.assign(element.dataset, value);
    else if (key.startsWith('on')) element.addEventListener(key.slice(2), value);
    else if (value === true) element.setAttribute(key, '');
    else element.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export const $ = (selector, root = document) => root.querySelector(selector);

export function setError(form, message) {
  const box = form.querySelector('.form-error');
  box.textContent = message || '';
  box.hidden = !message;
}

export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
const shortDayFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });

export function formatTime(iso) {
  return timeFormat.format(new Date(iso));
}

export function dayKey(iso) {
  const d = new Date(iso);
  return d.getFullYear() + '-' + d.getMonth() + '-' + d.getDate();
}

/** "Today", "Yesterday" or the full date, for separators. */
export function dayLabel(iso) {
  const date = new Date(iso);
  const today = new Date();
  const yesterday = new Date(today);
  yesterday.setDate(today.getDate() - 1);
  if (dayKey(date.toISOString()) === dayKey(today.toISOString())) return 'Today';
  if (dayKey(date.toISOString()) === dayKey(yesterday.toISOString())) return 'Yesterday';
  return dayFormat.format(date);
}

/** Time for today's items, a short date for older ones (conversation list). */
export function shortStamp(iso) {
  if (!iso) return '';
  return dayKey(iso) === dayKey(new Date().toISOString()) ? formatTime(iso) : shortDayFormat.format(new Date(iso));
}

export function initials(name) {
  return (name || '?').trim().split(/\s+/).slice(0, 2).map((part) => part[0]).join('').toUpperCase();
}
