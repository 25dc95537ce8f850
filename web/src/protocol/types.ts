/** Wire types of the chattrio protocol (docs/protocol.md). Framework-free. */

export type MessageKind = 'chat' | 'join' | 'leave';

export interface ChatMessage {
  id: string;
  roomId: number;
  seq: number;
  senderId: string;
  kind: MessageKind;
  text: string;
  clientMsgId: string | null;
  sentAt: number;
}

export interface Room {
  id: number;
  name: string;
  createdBy: string;
  createdAt: string;
  memberCount: number;
  /** only in a signed-in user's room list: chat messages of others after lastReadSeq, at most 100 */
  unread?: number;
  lastReadSeq?: number | null;
}

/** The room list's unread counts stop here: the badge then says "99+". */
export const UNREAD_CAP = 100;

export type ServerFrame =
  | { type: 'session-info'; sessionId: string; userId: string; nodeId: string }
  | { type: 'ROOM_MESSAGE'; message: ChatMessage }
  // several live messages of one room, in order, on a WebSocket opened as /ws?batch=1
  | { type: 'MESSAGES'; roomId: number; messages: ChatMessage[] }
  | { type: 'ROOM_CREATED'; room: Room }
  | { type: 'ACK'; ref?: string; clientMsgId: string | null; id: string; roomId: number; seq: number }
  | { type: 'SUBSCRIBED'; ref?: string; destination: string; lastSeq: number | null }
  | { type: 'UNSUBSCRIBED'; ref?: string; destination: string }
  // retryAfterMs: only on RATE_LIMITED, when the refused frame may be sent again
  | { type: 'ERROR'; code: string; message: string; ref?: string; retryAfterMs?: number }
  | { type: 'PONG'; ref?: string }
  | { type: 'READ_POSITION'; roomId: number; lastReadSeq: number }
  | { type: 'TYPING'; roomId: number; userId: string };

/** How long to wait before sending a RATE_LIMITED frame again: the server's hint, kept within
 * 0.1-10 s so that a missing or absurd hint neither hammers the node nor stalls the client. */
export function retryDelayMs(retryAfterMs: number | undefined): number {
  if (typeof retryAfterMs !== 'number' || !Number.isFinite(retryAfterMs)) return 1000;
  return Math.min(10_000, Math.max(100, retryAfterMs));
}

export type ClientFrame =
  | { type: 'SUBSCRIBE'; destination: string; since?: number; ref?: string }
  | { type: 'UNSUBSCRIBE'; destination: string; ref?: string }
  | { type: 'SEND'; roomId: number; text: string; clientMsgId: string; ref?: string }
  | { type: 'PING'; ref?: string }
  | { type: 'READ'; roomId: number; seq: number; ref?: string }
  | { type: 'TYPING'; roomId: number; ref?: string };

export const ROOMS_TOPIC = '/topic/rooms';
export const roomTopic = (roomId: number): string => `/topic/message/${roomId}`;
export const MAX_TEXT = 4000;

export function parseRoomTopic(destination: string): number | null {
  const m = /^\/topic\/message\/(\d+)$/.exec(destination);
  return m ? Number(m[1]) : null;
}
