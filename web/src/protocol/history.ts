/**
 * History and resume of the open rooms: entering a room loads its newest page over REST, then
 * subscribes with `since` = the highest seq held, so the server's replay fills any gap; every new
 * connection subscribes each room again the same way. Older pages come over REST on demand. When
 * the server cannot replay (dependency down) the subscription is asked again; when it will not (too
 * far behind) the room starts again from its newest page.
 */
import { addHistoryPage, newRoomState, type RoomState } from './roomState';
import { MessageList } from './roomStore';
import type { Timers } from './transport';
import type { ChatMessage, ServerFrame } from './types';
import { parseRoomTopic, retryDelayMs } from './types';

export interface HistoryApi {
  /** REST history: newest first, at most `limit`, only seq < before when before is given. */
  fetchMessages(roomId: number, before: number | null, limit: number): Promise<ChatMessage[]>;
}

/** What history and resume need of the client. */
export interface HistoryHost {
  /** the open rooms, shared with the client */
  readonly rooms: Map<number, RoomState>;
  changed(room?: RoomState): void;
  /** the connection is open and its session ready for frames */
  ready(): boolean;
  /** the connection generation now */
  gen(): number;
  /** put a room's SUBSCRIBE on the wire (with a ref that names the room); false when it could not go */
  sendSubscribe(roomId: number, since: number | null): boolean;
}

const RESUBSCRIBE_AFTER_UNAVAILABLE_MS = 1500;

export class RoomHistory {
  constructor(
    private readonly host: HistoryHost,
    private readonly api: HistoryApi,
    private readonly timers: Timers,
    private readonly pageSize: number,
  ) {}

  /**
   * Enter a room: load the newest page of history, then SUBSCRIBE with since = highest seq held.
   * Resolves when the history is loaded (the subscription follows as soon as connected).
   */
  open(roomId: number): Promise<void> {
    let room = this.host.rooms.get(roomId);
    if (!room) {
      room = newRoomState(roomId);
      this.host.rooms.set(roomId, room);
      this.host.changed(room);
    }
    if (room.historyLoaded) {
      if (room.subscribedGen === null) this.subscribe(room);
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

  /** A new connection is open: every room whose history is in resumes from its highest seq. */
  resumeAll(): void {
    for (const room of this.host.rooms.values()) {
      if (room.historyLoaded) this.subscribe(room);
    }
  }

  /** SUBSCRIBE the room on the current connection, from the highest seq held (nothing when not ready). */
  subscribe(room: RoomState): void {
    if (!this.host.ready()) return;
    if (this.host.sendSubscribe(room.roomId, room.list.highestSeq())) {
      room.subscribedGen = this.host.gen();
    }
  }

  /** Load the page before the lowest seq held. Resolves to the number of messages added. */
  async loadOlder(roomId: number): Promise<number> {
    const room = this.host.rooms.get(roomId);
    if (!room || !room.historyLoaded || room.loadingOlder || !room.hasMore) return 0;
    const before = room.list.lowestSeq();
    if (before === null) {
      room.hasMore = false;
      this.host.changed(room);
      return 0;
    }
    room.loadingOlder = true;
    this.host.changed(room);
    try {
      const page = await this.api.fetchMessages(roomId, before, this.pageSize);
      room.hasMore = false;
      return addHistoryPage(room, page, this.pageSize);
    } finally {
      room.loadingOlder = false;
      this.host.changed(room);
    }
  }

  /** SUBSCRIBED: the room is live on this connection. Returns the room, or null when the answer is
   * for a room closed since or a subscription of an older connection. */
  subscribed(frame: Extract<ServerFrame, { type: 'SUBSCRIBED' }>): RoomState | null {
    const roomId = parseRoomTopic(frame.destination);
    if (roomId === null) return null;
    const room = this.host.rooms.get(roomId);
    if (!room || room.subscribedGen !== this.host.gen()) return null;
    const hadNothing = room.list.size === 0;
    room.live = true;
    room.error = null;
    this.host.changed(room);
    if (hadNothing && frame.lastSeq !== null && frame.lastSeq !== undefined) {
      // We held no message, so we subscribed without `since`: anything that arrived between the
      // history call and the subscription is fetched again (duplicates are dropped by id).
      this.api.fetchMessages(roomId, null, this.pageSize).then(
        (page) => {
          if (this.host.rooms.get(roomId) !== room) return;
          addHistoryPage(room, page, this.pageSize);
          this.host.changed(room);
        },
        () => undefined,
      );
    }
    return room;
  }

  /** ERROR to a room's SUBSCRIBE: shown on the room, and retried when retrying can help
   * (RATE_LIMITED after the server's `retryAfterMs`). False when the room is no longer open
   * (the error belongs to no room). */
  subscribeFailed(roomId: number, err: { code: string; message: string }, retryAfterMs?: number): boolean {
    const room = this.host.rooms.get(roomId);
    if (!room) return false;
    room.error = err;
    room.subscribedGen = null;
    this.host.changed(room);
    if (err.code === 'UNAVAILABLE') this.resubscribeLater(room, RESUBSCRIBE_AFTER_UNAVAILABLE_MS);
    if (err.code === 'RATE_LIMITED') this.resubscribeLater(room, retryDelayMs(retryAfterMs));
    if (err.code === 'REPLAY_TOO_LONG') this.reloadLatest(room);
    return true;
  }

  private async loadLatest(room: RoomState): Promise<void> {
    try {
      const page = await this.api.fetchMessages(room.roomId, null, this.pageSize);
      if (this.host.rooms.get(room.roomId) !== room) return;
      room.hasMore = false;
      addHistoryPage(room, page, this.pageSize);
      room.historyLoaded = true;
      room.error = null;
      this.host.changed(room);
      this.subscribe(room);
    } catch (e) {
      if (this.host.rooms.get(room.roomId) !== room) return;
      room.error = { code: 'HISTORY', message: e instanceof Error ? e.message : String(e) };
      this.host.changed(room);
      throw e;
    }
  }

  /** The server could not replay what we miss yet (a dependency down or catching up): ask again. */
  private resubscribeLater(room: RoomState, delayMs: number): void {
    this.timers.setTimeout(() => {
      if (this.host.rooms.get(room.roomId) === room && room.subscribedGen === null) this.subscribe(room);
    }, delayMs);
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
    this.host.changed(room);
    this.open(room.roomId).catch(() => undefined);
  }
}
