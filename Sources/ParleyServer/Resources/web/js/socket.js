// The real-time connection: one WebSocket, authenticated by the HttpOnly cookie at upgrade,
// reconnecting with exponential backoff and jitter. See docs/protocol.md for the frames.

import { refreshSession } from './api.js';

export class RealtimeSocket {
  constructor({ onFrame, onStatus, onSessionEnded }) {
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.onSessionEnded = onSessionEnded;
    this.ws = null;
    this.ready = false;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
  }

  start() {
    this.stopped = false;
    this.connect();
    window.addEventListener('online', () => this.reconnectNow());
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, 'signed out');
    this.ws = null;
    this.ready = false;
  }

  /** Sends a frame if the socket is ready; returns whether it went out. */
  send(frame) {
    if (!this.ready || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  reconnectNow() {
    if (this.stopped || this.ready) return;
    clearTimeout(this.timer);
    this.attempt = 0;
    this.connect();
  }

  connect() {
    if (this.stopped) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(scheme + '//' + location.host + '/api/v1/ws');
    this.ws = ws;
    let opened = false;
    ws.addEventListener('open', () => { opened = true; });
    ws.addEventListener('message', (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      if (frame.type === 'hello') {
        this.ready = true;
        this.attempt = 0;
        this.onStatus(true, frame);
      }
      this.onFrame(frame);
    });
    ws.addEventListener('close', async (event) => {
      if (this.ws !== ws) return;
      const wasReady = this.ready;
      this.ready = false;
      this.ws = null;
      if (this.stopped) return;
      this.onStatus(false);
      if (event.code === 4001) { this.onSessionEnded(); return; }
      // Refused before opening, or closed for policy: the access cookie may have expired.
      if (!opened || event.code === 1008) {
        const renewed = await refreshSession();
        if (!renewed && navigator.onLine) {
          const me = await fetch('/api/v1/users/me', { credentials: 'same-origin' }).catch(() => null);
          if (me && me.status === 401) { this.onSessionEnded(); return; }
        }
      }
      this.schedule(wasReady);
    });
  }

  schedule(wasReady) {
    const base = wasReady ? 250 : Math.min(30000, 500 * 2 ** this.attempt);
    this.attempt += 1;
    const delay = base / 2 + Math.random() * base / 2;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
