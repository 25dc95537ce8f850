/**
 * Framework-free chattrio WebSocket client.
 *
 * - one WebSocket at a time, reconnecting with jittered, capped backoff after a drop;
 * - subscriptions (room list, open rooms) are re-sent on every new connection, each room with
 *   `since` = the highest seq held, so a resume shows no gap;
 * - messages are keyed by id (no duplicates) and kept in seq order;
 * - sends are tracked per clientMsgId: pending until ACK (or until the message itself arrives),
 *   failed after ERROR or a timeout, retried with the same clientMsgId.
 *
 * Everything that touches the outside world (WebSocket, timers, clock, randomness, the history REST
 * call) is injectable so the class can be unit-tested with fakes.
 */
import { Backoff, type BackoffOptions } from './backoff';
import { Heartbeat } from './heartbeat';
import { addHistoryPage, markNotLive, newRoomState, viewOf, type RoomState, type RoomView } from './roomState';
import { ReadPositions } from './readPositions';
import { PendingSends } from './pendingSends';
import { TypingThrottle, TypingUsers } from './typing';
import { MessageList } from './roomStore';
import { OPEN, realTimers, type Timers, type WebSocketFactory, type WebSocketLike } from './transport';
import {
  ROOMS_TOPIC,
  parseRoomTopic,
  roomTopic,
  type ChatMessage,
  type ClientFrame,
  type Room,
  type ServerFrame,
} from './types';

export { realTimers, type Timers, type WebSocketFactory, type WebSocketLike } from './transport';
export type { PendingMessage, PendingStatus, RoomView } from './roomState';
export { textLength } from './pendingSends';

export interface HistoryApi {
  /** REST history: newest first, at most `limit`, only seq < before when before is given. */
  fetchMessages(roomId: number, before: number | null, limit: number): Promise<ChatMessage[]>;
}

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

export interface ClientEvents {
  roomCreated: (room: Room) => void;
  /** a message that arrived over the WebSocket (live or resume replay), after de-duplication */
  message: (msg: ChatMessage) => void;
  session: (info: { sessionId: string; userId: string; nodeId: string }) => void;
  /** a new connection is ready (subscriptions re-sent); e.g. refetch lists that may have changed */
  connected: (info: { reconnect: boolean }) => void;
  /** the token is no longer accepted (close 1008 or 4001, or the auth check answered 401): log in again */
  authExpired: () => void;
  /** the server says this connection is another user's (the shared cookie of another tab's
   * sign-in): the client has stopped; log in again */
  userMismatch: (info: { userId: string }) => void;
  /** the user's read position in a room moved (READ_POSITION: this tab, another tab or device) */
  readPosition: (info: { roomId: number; lastReadSeq: number }) => void;
  /** ERROR frames that belong to no send or subscription of ours */
  error: (err: { code: string; message: string; ref?: string }) => void;
}

export interface ChatClientOptions {
  userId: string;
  /** builds the WebSocket URL for each connection attempt (may differ per attempt) */
  url: () => string;
  wsFactory: WebSocketFactory;
  history: HistoryApi;
  /** asked after AUTH_CHECK_AFTER_FAILED_CONNECTS connects in a row failed before opening */
  checkAuth?: () => Promise<AuthVerdict>;
  timers?: Timers;
  backoff?: BackoffOptions;
  /** a PING is sent after this long without any frame from the server */
  pingIntervalMs?: number;
  /** the connection is considered dead when nothing arrives this long after a PING */
  pongTimeoutMs?: number;
  /** a SEND without ACK/ERROR after this long is marked failed */
  sendTimeoutMs?: number;
  /** after this many failed attempts in a row the status is `offline` (attempts go on) */
  offlineAfterAttempts?: number;
  pageSize?: number;
  newClientMsgId?: () => string;
}

type RefInfo =
  | { kind: 'send'; clientMsgId: string; roomId: number }
  | { kind: 'subscribe'; roomId: number | null }
  | { kind: 'other' };

/** close codes after which reconnecting with the same token is pointless (docs/protocol.md) */
const AUTH_CLOSE_CODES = new Set([1008, 4001]);
const AUTH_CHECK_AFTER_FAILED_CONNECTS = 2;
const RESUBSCRIBE_AFTER_UNAVAILABLE_MS = 1500;

let idCounter = 0;
function defaultClientMsgId(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID) return `c-${c.randomUUID()}`;
  idCounter += 1;
  return `c-${Date.now().toString(36)}-${idCounter}-${Math.random().toString(36).slice(2, 10)}`;
}

type Listener = () => void;

export class ChatClient {
  readonly userId: string;
  private readonly opts: Required<
    Omit<ChatClientOptions, 'backoff' | 'timers' | 'newClientMsgId' | 'checkAuth'>
  >;
  private readonly timers: Timers;
  private readonly backoff: Backoff;
  private readonly newClientMsgId: () => string;
  private readonly checkAuth: (() => Promise<AuthVerdict>) | null;
  /** connection attempts in a row that closed before opening */
  private failedConnects = 0;
  private authCheckInFlight = false;

  private ws: WebSocketLike | null = null;
  private gen = 0;
  private everConnected = false;
  private started = false;
  private networkOnline = true;
  private reconnectTimer: unknown = null;
  private readonly heartbeat: Heartbeat;
  private refCounter = 0;
  private readonly refs = new Map<string, RefInfo>();
  private readonly sends: PendingSends;
  private readonly reads: ReadPositions;
  private readonly typingUsers: TypingUsers;
  private readonly typingThrottle: TypingThrottle;

  private watchingRooms = false;
  private readonly rooms = new Map<number, RoomState>();
  private snapshot: ClientSnapshot = {
    status: 'idle',
    nodeId: null,
    sessionId: null,
    attempts: 0,
    nextAttemptAt: null,
  };

  private readonly listeners = new Set<Listener>();
  private readonly handlers: { [K in keyof ClientEvents]: Set<ClientEvents[K]> } = {
    roomCreated: new Set(),
    message: new Set(),
    session: new Set(),
    connected: new Set(),
    authExpired: new Set(),
    userMismatch: new Set(),
    readPosition: new Set(),
    error: new Set(),
  };

  constructor(options: ChatClientOptions) {
    this.userId = options.userId;
    this.timers = options.timers ?? realTimers;
    this.backoff = new Backoff(options.backoff);
    this.newClientMsgId = options.newClientMsgId ?? defaultClientMsgId;
    this.checkAuth = options.checkAuth ?? null;
    this.opts = {
      userId: options.userId,
      url: options.url,
      wsFactory: options.wsFactory,
      history: options.history,
      pingIntervalMs: options.pingIntervalMs ?? 20000,
      pongTimeoutMs: options.pongTimeoutMs ?? 10000,
      sendTimeoutMs: options.sendTimeoutMs ?? 15000,
      offlineAfterAttempts: options.offlineAfterAttempts ?? 4,
      pageSize: options.pageSize ?? 50,
    };
    this.heartbeat = new Heartbeat(
      this.timers,
      this.opts.pingIntervalMs,
      this.opts.pongTimeoutMs,
      () => this.sendFrame({ type: 'PING', ref: this.ref({ kind: 'other' }) }),
      () => this.dropConnection('heartbeat timeout'),
    );
    this.sends = new PendingSends(
      {
        userId: this.userId,
        room: (roomId) => this.rooms.get(roomId),
        rooms: () => this.rooms.values(),
        changed: (room) => this.changed(room),
        gen: () => this.gen,
        transmitSend: (room, p) =>
          this.sendFrame({
            type: 'SEND',
            roomId: room.roomId,
            text: p.text,
            clientMsgId: p.clientMsgId,
            ref: this.ref({ kind: 'send', clientMsgId: p.clientMsgId, roomId: room.roomId }),
          }),
        resubscribe: (room) => {
          room.live = false;
          room.subscribedGen = null;
          this.subscribeRoom(room);
          this.changed(room);
        },
      },
      this.timers,
      this.opts.sendTimeoutMs,
      this.newClientMsgId,
    );
    this.reads = new ReadPositions(this.timers, (roomId, seq) => this.rooms.get(roomId)?.live === true && this.sendFrame({ type: 'READ', roomId, seq }));
    this.typingUsers = new TypingUsers(this.timers, (roomId) => {
      const room = this.rooms.get(roomId);
      if (!room) return;
      room.typing = this.typingUsers.users(roomId);
      this.changed(room);
    });
    this.typingThrottle = new TypingThrottle(this.timers);
  }

  // ---------------------------------------------------------------- observation

  /** Change notification (for useSyncExternalStore and the like). */
  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  on<K extends keyof ClientEvents>(event: K, handler: ClientEvents[K]): () => void {
    (this.handlers[event] as Set<ClientEvents[K]>).add(handler);
    return () => (this.handlers[event] as Set<ClientEvents[K]>).delete(handler);
  }

  getSnapshot = (): ClientSnapshot => this.snapshot;

  getRoom(roomId: number): RoomView | undefined {
    const r = this.rooms.get(roomId);
    return r ? viewOf(r) : undefined;
  }

  private emit<K extends keyof ClientEvents>(event: K, ...args: Parameters<ClientEvents[K]>): void {
    for (const h of this.handlers[event]) {
      try {
        (h as (...a: Parameters<ClientEvents[K]>) => void)(...args);
      } catch (e) {
        console.error(e);
      }
    }
  }

  private changed(room?: RoomState): void {
    if (room) room.view = null;
    for (const l of [...this.listeners]) l();
  }

  private setSnapshot(patch: Partial<ClientSnapshot>): void {
    this.snapshot = { ...this.snapshot, ...patch };
    this.changed();
  }

  // ---------------------------------------------------------------- lifecycle

  start(): void {
    if (this.started) return;
    this.started = true;
    this.connect();
  }

  stop(): void {
    this.started = false;
    this.clearReconnect();
    this.heartbeat.stop();
    const ws = this.ws;
    this.ws = null;
    this.gen += 1;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000, 'bye');
      } catch {
        /* ignore */
      }
    }
    this.markDisconnected();
    this.setSnapshot({ status: 'closed', nextAttemptAt: null });
  }

  /** Browser online/offline hint. Going online triggers an immediate attempt. */
  setNetworkOnline(online: boolean): void {
    this.networkOnline = online;
    if (!this.started) return;
    if (online) {
      if (!this.ws) this.reconnectNow();
    } else if (!this.ws || this.snapshot.status !== 'connected') {
      this.setSnapshot({ status: 'offline' });
    }
  }

  /** Skip the backoff wait and try now (e.g. a "retry now" button). */
  reconnectNow(): void {
    if (!this.started || this.ws) return;
    this.clearReconnect();
    this.connect();
  }

  /** Drop the current connection as if the network had failed (used by the heartbeat). */
  dropConnection(reason = 'dropped'): void {
    const ws = this.ws;
    if (!ws) return;
    const gen = this.gen;
    try {
      ws.close(4000, reason);
    } catch {
      /* ignore */
    }
    this.handleClose(gen, 1006, reason);
  }

  private connect(): void {
    this.clearReconnect();
    this.gen += 1;
    const gen = this.gen;
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
    if (gen !== this.gen) return;
    const reconnect = this.everConnected;
    this.everConnected = true;
    this.failedConnects = 0;
    this.setSnapshot({ status: 'connected', attempts: 0 });
    this.heartbeat.arm();
    if (this.watchingRooms) this.sendFrame({ type: 'SUBSCRIBE', destination: ROOMS_TOPIC, ref: this.ref({ kind: 'subscribe', roomId: null }) });
    for (const room of this.rooms.values()) {
      if (room.historyLoaded) this.subscribeRoom(room);
    }
    this.emit('connected', { reconnect });
  }

  private handleClose(gen: number, code: number, _reason: string): void {
    if (gen !== this.gen) return;
    const ws = this.ws;
    const opened = this.snapshot.status === 'connected';
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    this.ws = null;
    this.gen += 1; // ignore anything else from that socket
    this.heartbeat.stop();
    this.markDisconnected();
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
    this.emit('authExpired');
  }

  /** Failed connects may be a refused token, which the browser does not tell apart: ask. */
  private askAuth(): void {
    if (!this.checkAuth || this.authCheckInFlight) return;
    this.authCheckInFlight = true;
    this.checkAuth()
      .catch((): AuthVerdict => 'unknown')
      .then((verdict) => {
        this.authCheckInFlight = false;
        if (verdict === 'refused' && this.started && this.snapshot.status !== 'connected') this.expireAuth();
      });
  }

  private markDisconnected(): void {
    this.sends.disconnected();
    this.refs.clear();
    for (const room of this.rooms.values()) markNotLive(room);
  }

  private clearReconnect(): void {
    if (this.reconnectTimer !== null) {
      this.timers.clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
    }
  }

  // ---------------------------------------------------------------- frames out

  private ref(info: RefInfo): string {
    this.refCounter += 1;
    const r = `r${this.refCounter}`;
    if (info.kind !== 'other') this.refs.set(r, info);
    return r;
  }

  private sendFrame(frame: ClientFrame): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  // ---------------------------------------------------------------- room list

  watchRooms(): void {
    if (this.watchingRooms) return;
    this.watchingRooms = true;
    this.sendFrame({ type: 'SUBSCRIBE', destination: ROOMS_TOPIC, ref: this.ref({ kind: 'subscribe', roomId: null }) });
  }

  unwatchRooms(): void {
    if (!this.watchingRooms) return;
    this.watchingRooms = false;
    this.sendFrame({ type: 'UNSUBSCRIBE', destination: ROOMS_TOPIC });
  }

  // ---------------------------------------------------------------- rooms

  /**
   * Enter a room: load the newest page of history, then SUBSCRIBE with since = highest seq held.
   * Resolves when the history is loaded (the subscription follows as soon as connected).
   */
  openRoom(roomId: number): Promise<void> {
    let room = this.rooms.get(roomId);
    if (!room) {
      room = newRoomState(roomId);
      this.rooms.set(roomId, room);
      this.changed(room);
    }
    if (room.historyLoaded) {
      if (room.subscribedGen === null) this.subscribeRoom(room);
      return Promise.resolve();
    }
    if (!room.historyPromise) {
      const r = room;
      r.historyPromise = this.loadLatest(r).finally(() => {
        r.historyPromise = null;
      });
      return r.historyPromise;
    }
    return room.historyPromise;
  }

  private async loadLatest(room: RoomState): Promise<void> {
    try {
      const page = await this.opts.history.fetchMessages(room.roomId, null, this.opts.pageSize);
      if (this.rooms.get(room.roomId) !== room) return;
      room.hasMore = false;
      addHistoryPage(room, page, this.opts.pageSize);
      room.historyLoaded = true;
      room.error = null;
      this.changed(room);
      this.subscribeRoom(room);
    } catch (e) {
      if (this.rooms.get(room.roomId) !== room) return;
      room.error = { code: 'HISTORY', message: e instanceof Error ? e.message : String(e) };
      this.changed(room);
      throw e;
    }
  }

  /** The server could not replay what we miss yet (a dependency down or catching up): ask again. */
  private resubscribeLater(room: RoomState): void {
    this.timers.setTimeout(() => {
      if (this.rooms.get(room.roomId) === room && room.subscribedGen === null) this.subscribeRoom(room);
    }, RESUBSCRIBE_AFTER_UNAVAILABLE_MS);
  }

  /**
   * Too far behind for a resume (more than the server replays): drop what is held, load the
   * newest page again, and subscribe from it; older messages come by scrolling back, with no gap.
   */
  private reloadLatest(room: RoomState): void {
    room.list = new MessageList();
    room.historyLoaded = false;
    room.hasMore = true;
    room.error = null;
    this.changed(room);
    this.openRoom(room.roomId).catch(() => undefined);
  }

  private subscribeRoom(room: RoomState): void {
    if (!this.ws || this.ws.readyState !== OPEN || this.snapshot.status !== 'connected') return;
    const since = room.list.highestSeq();
    const frame: ClientFrame = {
      type: 'SUBSCRIBE',
      destination: roomTopic(room.roomId),
      ref: this.ref({ kind: 'subscribe', roomId: room.roomId }),
    };
    if (since !== null) frame.since = since;
    if (this.sendFrame(frame)) {
      room.subscribedGen = this.gen;
    }
  }

  closeRoom(roomId: number): void {
    const room = this.rooms.get(roomId);
    if (!room) return;
    if (room.subscribedGen !== null) this.sendFrame({ type: 'UNSUBSCRIBE', destination: roomTopic(roomId) });
    this.sends.forgetRoom(room);
    this.reads.forget(roomId);
    this.typingUsers.forget(roomId);
    this.rooms.delete(roomId);
    this.changed();
  }

  isOpen(roomId: number): boolean {
    return this.rooms.has(roomId);
  }

  /** Load the page before the lowest seq held. Resolves to the number of messages added. */
  async loadOlder(roomId: number): Promise<number> {
    const room = this.rooms.get(roomId);
    if (!room || !room.historyLoaded || room.loadingOlder || !room.hasMore) return 0;
    const before = room.list.lowestSeq();
    if (before === null) {
      room.hasMore = false;
      this.changed(room);
      return 0;
    }
    room.loadingOlder = true;
    this.changed(room);
    try {
      const page = await this.opts.history.fetchMessages(roomId, before, this.opts.pageSize);
      room.hasMore = false;
      return addHistoryPage(room, page, this.opts.pageSize);
    } finally {
      room.loadingOlder = false;
      this.changed(room);
    }
  }

  // ---------------------------------------------------------------- read positions, typing

  /** The user's read position in the room as far as this client knows (null: never read). */
  readPosition(roomId: number): number | null {
    return this.reads.position(roomId);
  }

  /** A position from the room list (REST). */
  learnReadPosition(roomId: number, seq: number): void {
    this.reads.learn(roomId, seq);
  }

  /** Messages up to `seq` of an open room are on screen in a visible tab: report it (throttled). */
  markRead(roomId: number, seq: number): void {
    this.reads.report(roomId, seq);
  }

  /** The user typed in an open room's composer: tell the others, at most every few seconds. */
  typing(roomId: number): void {
    if (this.rooms.get(roomId)?.live && this.typingThrottle.take(roomId)) this.sendFrame({ type: 'TYPING', roomId });
  }

  // ---------------------------------------------------------------- sending

  /** Queue a chat message; returns its clientMsgId. Throws on empty or too long text. */
  send(roomId: number, text: string): string {
    return this.sends.send(roomId, text);
  }

  /** Send a failed message again with the same clientMsgId (the server stores it once). */
  retry(clientMsgId: string): void {
    this.sends.retry(clientMsgId);
  }

  /** Forget a failed message. */
  discard(clientMsgId: string): void {
    this.sends.discard(clientMsgId);
  }

  // ---------------------------------------------------------------- frames in

  private handleMessage(gen: number, data: unknown): void {
    if (gen !== this.gen) return;
    // any frame proves the connection alive
    this.heartbeat.alive();
    if (typeof data !== 'string') return;
    let frame: ServerFrame;
    try {
      frame = JSON.parse(data) as ServerFrame;
    } catch {
      return;
    }
    if (!frame || typeof frame !== 'object') return;
    switch (frame.type) {
      case 'session-info':
        if (frame.userId !== this.userId) {
          this.stop();
          this.emit('userMismatch', { userId: frame.userId });
          return;
        }
        this.backoff.reset();
        this.setSnapshot({ nodeId: frame.nodeId, sessionId: frame.sessionId, attempts: 0 });
        this.emit('session', { sessionId: frame.sessionId, userId: frame.userId, nodeId: frame.nodeId });
        break;
      case 'ROOM_MESSAGE':
        this.onRoomMessage(frame.message);
        break;
      case 'MESSAGES':
        if (Array.isArray(frame.messages)) frame.messages.forEach((m) => this.onRoomMessage(m));
        break;
      case 'ROOM_CREATED':
        this.emit('roomCreated', frame.room);
        break;
      case 'ACK':
        this.onAck(frame);
        break;
      case 'SUBSCRIBED':
        this.onSubscribed(frame);
        break;
      case 'ERROR':
        this.onError(frame);
        break;
      case 'READ_POSITION':
        if (this.reads.learn(frame.roomId, frame.lastReadSeq)) this.changed();
        this.emit('readPosition', { roomId: frame.roomId, lastReadSeq: frame.lastReadSeq });
        break;
      case 'TYPING':
        if (this.rooms.has(frame.roomId) && frame.userId !== this.userId) this.typingUsers.typing(frame.roomId, frame.userId);
        break;
      default:
        break;
    }
  }

  private onRoomMessage(msg: ChatMessage): void {
    if (!msg || typeof msg.roomId !== 'number') return;
    const room = this.rooms.get(msg.roomId);
    if (!room) return;
    const isNew = room.list.upsert(msg);
    if (msg.kind === 'chat') this.typingUsers.stopped(msg.roomId, msg.senderId);
    if (msg.clientMsgId && msg.senderId === this.userId) this.sends.delivered(room, msg.clientMsgId);
    this.changed(room);
    if (isNew) this.emit('message', msg);
  }

  private onAck(frame: Extract<ServerFrame, { type: 'ACK' }>): void {
    const info = frame.ref ? this.refs.get(frame.ref) : undefined;
    if (frame.ref) this.refs.delete(frame.ref);
    this.sends.acked(frame, info?.kind === 'send' ? info : undefined);
  }

  private onSubscribed(frame: Extract<ServerFrame, { type: 'SUBSCRIBED' }>): void {
    if (frame.ref) this.refs.delete(frame.ref);
    const roomId = parseRoomTopic(frame.destination);
    if (roomId === null) return;
    const room = this.rooms.get(roomId);
    if (!room || room.subscribedGen !== this.gen) return;
    const hadNothing = room.list.size === 0;
    room.live = true;
    room.error = null;
    this.changed(room);
    if (hadNothing && frame.lastSeq !== null && frame.lastSeq !== undefined) {
      // We held no message, so we subscribed without `since`: anything that arrived between the
      // history call and the subscription is fetched again (duplicates are dropped by id).
      this.opts.history.fetchMessages(roomId, null, this.opts.pageSize).then(
        (page) => {
          if (this.rooms.get(roomId) !== room) return;
          addHistoryPage(room, page, this.opts.pageSize);
          this.changed(room);
        },
        () => undefined,
      );
    }
    this.sends.flush(room);
  }

  private onError(frame: Extract<ServerFrame, { type: 'ERROR' }>): void {
    const info = frame.ref ? this.refs.get(frame.ref) : undefined;
    if (frame.ref) this.refs.delete(frame.ref);
    const err = { code: frame.code, message: frame.message };
    if (info?.kind === 'send') {
      this.sends.refused(info, err);
      return;
    }
    if (info?.kind === 'subscribe' && info.roomId !== null) {
      const room = this.rooms.get(info.roomId);
      if (room) {
        room.error = err;
        room.subscribedGen = null;
        this.changed(room);
        if (err.code === 'UNAVAILABLE') this.resubscribeLater(room);
        if (err.code === 'REPLAY_TOO_LONG') this.reloadLatest(room);
        return;
      }
    }
    this.emit('error', { ...err, ref: frame.ref });
  }
}
