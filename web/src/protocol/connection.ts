/**
 * The connection's life cycle: one WebSocket at a time, the heartbeat on it, reconnecting with
 * jittered, capped backoff after a drop, the auth check after failed connects, and the status a UI
 * shows. What the frames mean (rooms, sends) is the host's business: it is told when a connection
 * opened or went, and handed every frame that arrives on the current one.
 */
import { Backoff, type BackoffOptions } from './backoff';
import { Heartbeat } from './heartbeat';
import { OPEN, type Timers, type WebSocketFactory, type WebSocketLike } from './transport';
import type { ClientFrame } from './types';

/** Whether the server still takes our token: a browser reports a refused WebSocket handshake (HTTP 401)
 * only as close code 1006, so after failed connects the client asks a cheap REST call. */
export type AuthVerdict = 'valid' | 'refused' | 'unknown';

export type ConnectionStatus = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'offline' | 'closed';

export interface ClientSnapshot {
  status: ConnectionStatus;
  nodeId: string | null;
  sessionId: string | null;
  /** how many reconnect attempts have failed in a row */
  attempts: number;
  /** when the next reconnect attempt is due (timers.now() units), or null */
  nextAttemptAt: number | null;
}

export interface ConnectionOptions {
  /** builds the WebSocket URL for each connection attempt (may differ per attempt) */
  url: () => string;
  wsFactory: WebSocketFactory;
  /** asked after AUTH_CHECK_AFTER_FAILED_CONNECTS connects in a row failed before opening */
  checkAuth: (() => Promise<AuthVerdict>) | null;
  backoff?: BackoffOptions;
  /** a PING is sent after this long without any frame from the server */
  pingIntervalMs: number;
  /** the connection is given up when nothing arrives this long after a PING */
  pongTimeoutMs: number;
  /** a socket not open this long after it was asked for is given up; doubled after each such
   * failure in a row (at most MAX_OPEN_TIMEOUT_MS), so a slow network still gets through */
  openTimeoutMs: number;
  /** after this many failed attempts in a row the status is `offline` (attempts go on) */
  offlineAfterAttempts: number;
}

/** What the connection tells the client it serves. */
export interface ConnectionHost {
  /** a socket opened (`reconnect`: not the first one): subscriptions go again */
  opened(reconnect: boolean): void;
  /** a frame arrived on the current socket */
  frame(data: unknown): void;
  /** the socket is gone (dropped or stopped): nothing sent on it will be answered */
  disconnected(): void;
  /** the heartbeat's PING is due; the host gives it a ref */
  ping(): void;
  /** the server no longer takes the token: the connection has stopped */
  authExpired(): void;
  /** the snapshot changed */
  changed(): void;
}

/** close codes after which reconnecting with the same token is pointless (docs/protocol.md) */
const AUTH_CLOSE_CODES = new Set([1008, 4001]);
const AUTH_CHECK_AFTER_FAILED_CONNECTS = 2;
const MAX_OPEN_TIMEOUT_MS = 30000;

export class Connection {
  private ws: WebSocketLike | null = null;
  private generation = 0;
  private everConnected = false;
  private started = false;
  private networkOnline = true;
  private reconnectTimer: unknown = null;
  /** gives up a socket that does not open: a hung node's kernel still accepts the TCP connection */
  private openTimer: unknown = null;
  /** connection attempts in a row that closed before opening */
  private failedConnects = 0;
  private authCheckInFlight = false;
  private readonly backoff: Backoff;
  private readonly heartbeat: Heartbeat;
  private snap: ClientSnapshot = { status: 'idle', nodeId: null, sessionId: null, attempts: 0, nextAttemptAt: null };

  constructor(
    private readonly host: ConnectionHost,
    private readonly opts: ConnectionOptions,
    private readonly timers: Timers,
  ) {
    this.backoff = new Backoff(opts.backoff);
    this.heartbeat = new Heartbeat(timers, opts.pingIntervalMs, opts.pongTimeoutMs, () => host.ping(), () => this.drop('heartbeat timeout'));
  }

  get snapshot(): ClientSnapshot {
    return this.snap;
  }

  /** The socket generation: it changes with every new socket and every drop, so work tied to
   * one connection (a subscription, a send in flight) can tell it is stale. */
  get gen(): number {
    return this.generation;
  }

  /** Open and past the handshake: frames sent now reach the server's session. */
  get ready(): boolean {
    return this.ws !== null && this.ws.readyState === OPEN && this.snap.status === 'connected';
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.connect();
  }

  stop(): void {
    this.started = false;
    this.clearReconnect();
    this.clearOpenTimer();
    this.heartbeat.stop();
    const ws = this.ws;
    this.ws = null;
    this.generation += 1;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000, 'bye');
      } catch {
        /* ignore */
      }
    }
    this.host.disconnected();
    this.setSnapshot({ status: 'closed', nextAttemptAt: null });
  }

  /** Browser online/offline hint. Going online triggers an immediate attempt. */
  setNetworkOnline(online: boolean): void {
    this.networkOnline = online;
    if (!this.started) return;
    if (online) {
      if (!this.ws) this.reconnectNow();
    } else if (!this.ws || this.snap.status !== 'connected') {
      this.setSnapshot({ status: 'offline' });
    }
  }

  /** Skip the backoff wait and try now (e.g. a "retry now" button). */
  reconnectNow(): void {
    if (!this.started || this.ws) return;
    this.clearReconnect();
    this.connect();
  }

  /** Drop the current connection, or the attempt, as if the network had failed (used by the
   * heartbeat and the open timeout). */
  drop(reason = 'dropped'): void {
    const ws = this.ws;
    if (!ws) return;
    const gen = this.generation;
    try {
      ws.close(4000, reason);
    } catch {
      /* ignore */
    }
    this.handleClose(gen, 1006, reason);
  }

  /** `session-info` arrived: the connection is good, so the backoff starts over. */
  sessionStarted(nodeId: string, sessionId: string): void {
    this.backoff.reset();
    this.setSnapshot({ nodeId, sessionId, attempts: 0 });
  }

  /** Put a frame on the wire; false when there is no open socket or it refused. */
  send(frame: ClientFrame): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  private setSnapshot(patch: Partial<ClientSnapshot>): void {
    this.snap = { ...this.snap, ...patch };
    this.host.changed();
  }

  private connect(): void {
    this.clearReconnect();
    this.generation += 1;
    const gen = this.generation;
    let ws: WebSocketLike;
    this.setSnapshot({
      status: this.everConnected ? this.reconnectingStatus() : 'connecting',
      nextAttemptAt: null,
    });
    try {
      ws = this.opts.wsFactory(this.opts.url());
    } catch {
      this.handleClose(gen, 1006, 'factory failed');
      return;
    }
    this.ws = ws;
    const openTimeout = Math.min(MAX_OPEN_TIMEOUT_MS, this.opts.openTimeoutMs * 2 ** this.failedConnects);
    this.openTimer = this.timers.setTimeout(() => {
      this.openTimer = null;
      this.drop('open timeout');
    }, openTimeout);
    ws.onopen = () => this.handleOpen(gen);
    ws.onmessage = (ev) => this.handleMessage(gen, ev.data);
    ws.onclose = (ev) => this.handleClose(gen, ev.code, ev.reason);
    ws.onerror = () => {
      /* a close event follows */
    };
  }

  private reconnectingStatus(): ConnectionStatus {
    if (!this.networkOnline || this.backoff.attempts >= this.opts.offlineAfterAttempts) return 'offline';
    return 'reconnecting';
  }

  private handleOpen(gen: number): void {
    if (gen !== this.generation) return;
    this.clearOpenTimer();
    const reconnect = this.everConnected;
    this.everConnected = true;
    this.failedConnects = 0;
    this.setSnapshot({ status: 'connected', attempts: 0 });
    this.heartbeat.arm();
    this.host.opened(reconnect);
  }

  private handleMessage(gen: number, data: unknown): void {
    if (gen !== this.generation) return;
    // any frame proves the connection alive
    this.heartbeat.alive();
    this.host.frame(data);
  }

  private handleClose(gen: number, code: number, _reason: string): void {
    if (gen !== this.generation) return;
    const ws = this.ws;
    const opened = this.snap.status === 'connected';
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    this.ws = null;
    this.generation += 1; // ignore anything else from that socket
    this.clearOpenTimer();
    this.heartbeat.stop();
    this.host.disconnected();
    if (!this.started) {
      this.setSnapshot({ status: 'closed' });
      return;
    }
    if (AUTH_CLOSE_CODES.has(code)) {
      this.expireAuth();
      return;
    }
    if (!opened) {
      this.failedConnects += 1;
      if (this.failedConnects >= AUTH_CHECK_AFTER_FAILED_CONNECTS) this.askAuth();
    }
    const delay = this.backoff.next();
    this.reconnectTimer = this.timers.setTimeout(() => {
      this.reconnectTimer = null;
      if (this.started) this.connect();
    }, delay);
    this.setSnapshot({
      status: this.reconnectingStatus(),
      attempts: this.backoff.attempts,
      nextAttemptAt: this.timers.now() + delay,
      nodeId: null,
      sessionId: null,
    });
  }

  private expireAuth(): void {
    this.stop();
    this.host.authExpired();
  }

  /** Failed connects may be a refused token, which the browser does not tell apart: ask. */
  private askAuth(): void {
    const checkAuth = this.opts.checkAuth;
    if (!checkAuth || this.authCheckInFlight) return;
    this.authCheckInFlight = true;
    checkAuth()
      .catch((): AuthVerdict => 'unknown')
      .then((verdict) => {
        this.authCheckInFlight = false;
        if (verdict === 'refused' && this.started && this.snap.status !== 'connected') this.expireAuth();
      });
  }

  private clearOpenTimer(): void {
    if (this.openTimer !== null) {
      this.timers.clearTimeout(this.openTimer);
      this.openTimer = null;
    }
  }

  private clearReconnect(): void {
    if (this.reconnectTimer !== null) {
      this.timers.clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
    }
  }
}
