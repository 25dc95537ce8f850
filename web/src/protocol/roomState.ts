/** A room the client has open: its messages, its pending sends, where its history and subscription stand. */
import { MessageList } from './roomStore';
import type { ChatMessage } from './types';

export type PendingStatus = 'pending' | 'failed';

export interface PendingMessage {
  clientMsgId: string;
  roomId: number;
  text: string;
  status: PendingStatus;
  createdAt: number;
  error: { code: string; message: string } | null;
}

/** The immutable snapshot a UI renders (a new object after each change). */
export interface RoomView {
  roomId: number;
  messages: readonly ChatMessage[];
  pending: readonly PendingMessage[];
  historyLoaded: boolean;
  live: boolean;
  hasMore: boolean;
  loadingOlder: boolean;
  error: { code: string; message: string } | null;
  /** other users typing in the room now */
  typing: readonly string[];
}

export interface RoomState {
  roomId: number;
  list: MessageList;
  pending: Map<string, PendingMessage>;
  historyLoaded: boolean;
  historyPromise: Promise<void> | null;
  /** connection generation on which SUBSCRIBE was sent, or null */
  subscribedGen: number | null;
  live: boolean;
  hasMore: boolean;
  loadingOlder: boolean;
  error: { code: string; message: string } | null;
  typing: readonly string[];
  /** cached snapshot; null after a change */
  view: RoomView | null;
}

export function newRoomState(roomId: number): RoomState {
  return {
    roomId,
    list: new MessageList(),
    pending: new Map(),
    historyLoaded: false,
    historyPromise: null,
    subscribedGen: null,
    live: false,
    hasMore: true,
    loadingOlder: false,
    error: null,
    typing: [],
    view: null,
  };
}

export function viewOf(r: RoomState): RoomView {
  r.view ??= {
    roomId: r.roomId,
    messages: r.list.list(),
    pending: [...r.pending.values()],
    historyLoaded: r.historyLoaded,
    live: r.live,
    hasMore: r.hasMore,
    loadingOlder: r.loadingOlder,
    error: r.error,
    typing: r.typing,
  };
  return r.view;
}

/**
 * Merge a REST history page (newest first, at most pageSize): duplicates are dropped by id.
 * A full page means older messages may exist. Returns how many messages were new.
 */
export function addHistoryPage(room: RoomState, page: readonly ChatMessage[], pageSize: number): number {
  let added = 0;
  for (const m of page) if (room.list.upsert(m)) added += 1;
  if (page.length >= pageSize) room.hasMore = true;
  return added;
}

/** The connection dropped: the room is no longer live and must be subscribed again. */
export function markNotLive(room: RoomState): void {
  if (room.live || room.subscribedGen !== null) {
    room.live = false;
    room.subscribedGen = null;
    room.view = null;
  }
}
