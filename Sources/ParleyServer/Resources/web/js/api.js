// REST client. Credentials travel only in the HttpOnly cookies the server sets at sign-in; this
// module never sees or stores a token.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function send(method, path, body) {
  const options = { method, credentials: 'same-origin', headers: {} };
  if (body !== undefined) {
    options.headers['content-type'] = 'application/json';
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection.');
  }
  if (response.status === 204) return null;
  const text = await response.text();
  const data = text ? safeParse(text) : null;
  if (!response.ok) {
    const error = data && data.error ? data.error : { code: 'http_' + response.status, message: 'Request failed (' + response.status + ').' };
    throw new ApiError(response.status, error.code, error.message);
  }
  return data;
}

function safeParse(text) {
  try { return JSON.parse(text); } catch { return null; }
}

// A hint, not a credential: whether this browser holds a session, so that a first visit asks the
// server nothing that must fail. The server sets the readable `parley_signed_in` cookie beside the
// HttpOnly session cookies (and clears it at sign-out); the session itself stays in those.
const SESSION_HINT = 'parley_signed_in';

export const sessionHint = {
  /** True when the server said a session exists. */
  present() {
    return document.cookie.split(';').some((part) => part.trim() === SESSION_HINT + '=1');
  },
  /** Nothing to do: the server sets the hint with the session cookies. */
  set() {},
  /** Forgets the hint once the server refused the session. */
  clear() {
    document.cookie = SESSION_HINT + '=; Max-Age=0; Path=/; SameSite=Strict';
  },
};

let refreshing = null;

/** Renews the access cookie with the refresh cookie; one attempt at a time. */
export function refreshSession() {
  if (!refreshing) {
    refreshing = send('POST', '/api/v1/auth/refresh')
      .then(() => true, (error) => {
        // Refused (not merely unreachable): the session is over.
        if (error.status >= 400 && error.status < 500) sessionHint.clear();
        return false;
      })
      .finally(() => { refreshing = null; });
  }
  return refreshing;
}

/** A request that renews an expired access token once and retries. */
export async function api(method, path, body) {
  try {
    return await send(method, path, body);
  } catch (error) {
    if (error.status === 401 && !path.startsWith('/api/v1/auth/') && await refreshSession()) {
      return send(method, path, body);
    }
    throw error;
  }
}

export const auth = {
  register: (fields) => send('POST', '/api/v1/auth/register', fields),
  login: (login, password) => send('POST', '/api/v1/auth/login', { login, password }),
  logout: () => send('POST', '/api/v1/auth/logout').catch(() => null),
};
