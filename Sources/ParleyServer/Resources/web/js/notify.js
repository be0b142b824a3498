// Desktop notifications. Permission is asked at most once per page, and only from something the
// user did (browsers ignore, or hold against a site, prompts that come on their own).

let asked = false;

const supported = () => 'Notification' in window;

export function askNotificationPermission() {
  if (asked || !supported() || Notification.permission !== 'default') return;
  asked = true;
  try {
    const answer = Notification.requestPermission();
    if (answer && answer.catch) answer.catch(() => {});
  } catch {
    // Old callback-only implementations, or a browser that refuses outright.
  }
}

/** Shows a notification if allowed; `tag` replaces an earlier one of the same conversation. */
export function notify({ title, body, tag, onclick }) {
  if (!supported() || Notification.permission !== 'granted') return;
  try {
    const notification = new Notification(title, { body, tag });
    notification.addEventListener('click', () => {
      window.focus();
      notification.close();
      onclick();
    });
  } catch {
    // Android Chrome only notifies through a service worker; then we do without.
  }
}
