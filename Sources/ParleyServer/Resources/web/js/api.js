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

let refreshing = null;

/** Renews the access cookie with the refresh cookie; one attempt at a time. */
export function refreshSession() {
  if (!refreshing) {
    refreshing = send('POST', '/api/v1/auth/refresh').then(() => true, () => false).finally(() => { refreshing = null; });
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
