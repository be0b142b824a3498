// File uploads: each file goes up on its own request (XMLHttpRequest, for its progress events),
// as the raw body with its name in X-Filename, before the message that carries it is sent.

import { refreshSession } from './api.js';

/** Why an upload failed, in words for the person who tried. */
function reason(status, code, message) {
  if (status === 0) return 'Network error: the upload did not reach the server.';
  if (code === 'upload_too_large') return 'Too large: ' + message;
  if (code === 'quota_exceeded') return 'Over your storage quota: ' + message;
  if (code === 'rate_limited') return 'Too many uploads at once; try again in a moment.';
  if (code === 'storage_unavailable') return 'File storage is unavailable right now; try again shortly.';
  return message || 'Upload failed (' + status + ').';
}

function post(file, onProgress) {
  const xhr = new XMLHttpRequest();
  const done = new Promise((resolve, reject) => {
    xhr.open('POST', '/api/v1/uploads');
    xhr.withCredentials = true;
    // The server reads the type from the bytes; the name travels percent-encoded (UTF-8).
    xhr.setRequestHeader('X-Filename', encodeURIComponent(file.name || 'pasted image'));
    xhr.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener('load', () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { data = null; }
      if (xhr.status === 201 && data && data.attachment) return resolve(data.attachment);
      const error = (data && data.error) || {};
      reject(Object.assign(new Error(reason(xhr.status, error.code, error.message)), { status: xhr.status, code: error.code }));
    });
    xhr.addEventListener('error', () => reject(Object.assign(new Error(reason(0)), { status: 0 })));
    xhr.addEventListener('abort', () => reject(Object.assign(new Error('Cancelled.'), { status: 0, code: 'cancelled' })));
    xhr.send(file);
  });
  return { xhr, done };
}

/**
 * Starts uploading `file`. Returns `{ done, cancel }`: `done` resolves with the attachment or
 * rejects with an Error whose message says why; `cancel()` aborts it. An expired session is
 * renewed once.
 */
export function upload(file, onProgress) {
  let current = post(file, onProgress);
  let cancelled = false;
  const done = current.done.catch(async (error) => {
    if (error.status !== 401 || cancelled || !(await refreshSession())) throw error;
    current = post(file, onProgress);
    return current.done;
  });
  return {
    done,
    cancel() {
      cancelled = true;
      current.xhr.abort();
    },
  };
}

/** 1.2 MB, 340 KB, 12 bytes. */
export function formatSize(bytes) {
  if (bytes < 1000) return bytes + (bytes === 1 ? ' byte' : ' bytes');
  const units = ['KB', 'MB', 'GB'];
  let value = bytes / 1000;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return (value < 10 ? value.toFixed(1) : Math.round(value)) + ' ' + units[unit];
}

/** A short label for a file's type, shown in its chip. */
export function typeLabel(contentType, name) {
  const ext = (name.match(/\.([A-Za-z0-9]{1,5})$/) || [])[1];
  if (contentType === 'application/pdf') return 'PDF';
  if (contentType.startsWith('image/')) return 'IMG';
  if (contentType.startsWith('video/')) return 'VID';
  if (contentType.startsWith('audio/')) return 'AUD';
  if (contentType === 'application/zip' || contentType === 'application/gzip') return 'ZIP';
  if (contentType.startsWith('text/')) return ext ? ext.toUpperCase() : 'TXT';
  return ext ? ext.toUpperCase() : 'FILE';
}
