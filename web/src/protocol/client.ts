/**
 * Framework-free chattrio WebSocket client: the facade the React code uses.
 *
 * - the connection (connection.ts): one WebSocket at a time, heartbeat, reconnecting with
 *   jittered, capped backoff after a drop;
 * - history and resume (history.ts): subscriptions (room list, open rooms) are re-sent on every new
 *   connection, each room with `since` = the highest seq held, so a resume shows no gap;
 * - messages are keyed by id (no duplicates) and kept in seq order;
 * - sends (pendingSends.ts) are tracked per clientMsgId: pending until ACK (or until the message
 *   itself arrives), failed after ERROR or a timeout, retried with the same clientMsgId.
 *
 * This class routes the server's frames to those parts, names what it sends with refs, and tells
 * the UI about changes. Everything that touches the outside world (WebSocket, timers, clock,
 * randomness, the history REST call) is injectable so it can be unit-tested with fakes.
 */
import type { BackoffOptions } from './backoff';
import { Connection, type AuthVerdict, type ClientSnapshot } from './connection';
import { RoomHistory, type HistoryApi } from './history';
import { markNotLive, viewOf, type RoomState, type RoomView } from './roomState';
import { ReadPositions } from './readPositions';
import { PendingSends } from './pendingSends';
import { TypingThrottle, TypingUsers } from './typing';
import { realTimers, type Timers, type WebSocketFactory } from './transport';
import { ROOMS_TOPIC, roomTopic, type ChatMessage, type ClientFrame, type Room, type ServerFrame } from './types';

export { realTimers, type Timers, type WebSocketFactory, type WebSocketLike } from './transport';
export type { PendingMessage, PendingStatus, RoomView } from './roomState';
export type { AuthVerdict, ClientSnapshot, ConnectionStatus } from './connection';
export type { HistoryApi } from './history';
export { textLength } from './pendingSends';

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
  /** a WebSocket not open this long after it was asked for is given up (doubled after each such
   * failure in a row) */
  openTimeoutMs?: number;
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
  private readonly timers: Timers;
  private readonly conn: Connection;
  private readonly history: RoomHistory;
  private refCounter = 0;
  private readonly refs = new Map<string, RefInfo>();
  private readonly sends: PendingSends;
  private readonly reads: ReadPositions;
  private readonly typingUsers: TypingUsers;
  private readonly typingThrottle: TypingThrottle;

  private watchingRooms = false;
  private readonly rooms = new Map<number, RoomState>();

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
    this.conn = new Connection(
      {
        opened: (reconnect) => this.onOpened(reconnect),
        frame: (data) => this.handleMessage(data),
        disconnected: () => this.markDisconnected(),
        ping: () => this.conn.send({ type: 'PING', ref: this.ref({ kind: 'other' }) }),
        authExpired: () => this.emit('authExpired'),
        changed: () => this.changed(),
      },
      {
        url: options.url,
        wsFactory: options.wsFactory,
        checkAuth: options.checkAuth ?? null,
        backoff: options.backoff,
        // A hung node is given up 9 s after its last frame, and the rooms resume on another node
        // within 15 s even when the first new connection lands on the hung node again
        // (docs/protocol.md, "Liveness: client pings").
        pingIntervalMs: options.pingIntervalMs ?? 5000,
        pongTimeoutMs: options.pongTimeoutMs ?? 4000,
        openTimeoutMs: options.openTimeoutMs ?? 3000,
        offlineAfterAttempts: options.offlineAfterAttempts ?? 4,
      },
      this.timers,
    );
    this.history = new RoomHistory(
      {
        rooms: this.rooms,
        changed: (room) => this.changed(room),
        ready: () => this.conn.ready,
        gen: () => this.conn.gen,
        sendSubscribe: (roomId, since) => {
          const frame: ClientFrame = { type: 'SUBSCRIBE', destination: roomTopic(roomId), ref: this.ref({ kind: 'subscribe', roomId }) };
          if (since !== null) frame.since = since;
          return this.conn.send(frame);
        },
      },
      options.history,
      this.timers,
      options.pageSize ?? 50,
    );
    this.sends = new PendingSends(
      {
        userId: this.userId,
        room: (roomId) => this.rooms.get(roomId),
        rooms: () => this.rooms.values(),
        changed: (room) => this.changed(room),
        gen: () => this.conn.gen,
        transmitSend: (room, p) =>
          this.conn.send({
            type: 'SEND',
            roomId: room.roomId,
            text: p.text,
            clientMsgId: p.clientMsgId,
            ref: this.ref({ kind: 'send', clientMsgId: p.clientMsgId, roomId: room.roomId }),
          }),
        resubscribe: (room) => {
          room.live = false;
          room.subscribedGen = null;
          this.history.subscribe(room);
          this.changed(room);
        },
      },
      this.timers,
      options.sendTimeoutMs ?? 15000,
      options.newClientMsgId ?? defaultClientMsgId,
    );
    this.reads = new ReadPositions(this.timers, (roomId, seq) => this.rooms.get(roomId)?.live === true && this.conn.send({ type: 'READ', roomId, seq }));
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

  getSnapshot = (): ClientSnapshot => this.conn.snapshot;

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

  // ---------------------------------------------------------------- lifecycle

  start(): void {
    this.conn.start();
  }

  stop(): void {
    this.conn.stop();
  }

  /** Browser online/offline hint. Going online triggers an immediate attempt. */
  setNetworkOnline(online: boolean): void {
    this.conn.setNetworkOnline(online);
  }

  /** Skip the backoff wait and try now (e.g. a "retry now" button). */
  reconnectNow(): void {
    this.conn.reconnectNow();
  }

  /** Drop the current connection as if the network had failed. */
  dropConnection(reason = 'dropped'): void {
    this.conn.drop(reason);
  }

  /** A new connection: what we follow is subscribed again, each room from its highest seq. */
  private onOpened(reconnect: boolean): void {
    if (this.watchingRooms) this.conn.send({ type: 'SUBSCRIBE', destination: ROOMS_TOPIC, ref: this.ref({ kind: 'subscribe', roomId: null }) });
    this.history.resumeAll();
    this.emit('connected', { reconnect });
  }

  private markDisconnected(): void {
    this.sends.disconnected();
    this.refs.clear();
    for (const room of this.rooms.values()) markNotLive(room);
  }

  // ---------------------------------------------------------------- frames out

  private ref(info: RefInfo): string {
    this.refCounter += 1;
    const r = `r${this.refCounter}`;
    if (info.kind !== 'other') this.refs.set(r, info);
    return r;
  }

  // ---------------------------------------------------------------- room list

  watchRooms(): void {
    if (this.watchingRooms) return;
    this.watchingRooms = true;
    this.conn.send({ type: 'SUBSCRIBE', destination: ROOMS_TOPIC, ref: this.ref({ kind: 'subscribe', roomId: null }) });
  }

  unwatchRooms(): void {
    if (!this.watchingRooms) return;
    this.watchingRooms = false;
    this.conn.send({ type: 'UNSUBSCRIBE', destination: ROOMS_TOPIC });
  }

  // ---------------------------------------------------------------- rooms

  /**
   * Enter a room: load the newest page of history, then SUBSCRIBE with since = highest seq held.
   * Resolves when the history is loaded (the subscription follows as soon as connected).
   */
  openRoom(roomId: number): Promise<void> {
    return this.history.open(roomId);
  }

  closeRoom(roomId: number): void {
    const room = this.rooms.get(roomId);
    if (!room) return;
    if (room.subscribedGen !== null) this.conn.send({ type: 'UNSUBSCRIBE', destination: roomTopic(roomId) });
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
  loadOlder(roomId: number): Promise<number> {
    return this.history.loadOlder(roomId);
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
    if (this.rooms.get(roomId)?.live && this.typingThrottle.take(roomId)) this.conn.send({ type: 'TYPING', roomId });
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

  private handleMessage(data: unknown): void {
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
        this.conn.sessionStarted(frame.nodeId, frame.sessionId);
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
    const room = this.history.subscribed(frame);
    if (room) this.sends.flush(room);
  }

  private onError(frame: Extract<ServerFrame, { type: 'ERROR' }>): void {
    const info = frame.ref ? this.refs.get(frame.ref) : undefined;
    if (frame.ref) this.refs.delete(frame.ref);
    const err = { code: frame.code, message: frame.message };
    if (info?.kind === 'send') {
      this.sends.refused(info, err, frame.retryAfterMs);
      return;
    }
    if (info?.kind === 'subscribe' && info.roomId !== null && this.history.subscribeFailed(info.roomId, err, frame.retryAfterMs)) return;
    this.emit('error', { ...err, ref: frame.ref });
  }
}
