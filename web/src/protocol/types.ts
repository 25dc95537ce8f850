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
}

export type ServerFrame =
  | { type: 'session-info'; sessionId: string; userId: string; nodeId: string }
  | { type: 'ROOM_MESSAGE'; message: ChatMessage }
  // several live messages of one room, in order, on a WebSocket opened as /ws?batch=1
  | { type: 'MESSAGES'; roomId: number; messages: ChatMessage[] }
  | { type: 'ROOM_CREATED'; room: Room }
  | { type: 'ACK'; ref?: string; clientMsgId: string | null; id: string; roomId: number; seq: number }
  | { type: 'SUBSCRIBED'; ref?: string; destination: string; lastSeq: number | null }
  | { type: 'UNSUBSCRIBED'; ref?: string; destination: string }
  | { type: 'ERROR'; code: string; message: string; ref?: string }
  | { type: 'PONG'; ref?: string };

export type ClientFrame =
  | { type: 'SUBSCRIBE'; destination: string; since?: number; ref?: string }
  | { type: 'UNSUBSCRIBE'; destination: string; ref?: string }
  | { type: 'SEND'; roomId: number; text: string; clientMsgId: string; ref?: string }
  | { type: 'PING'; ref?: string };

export const ROOMS_TOPIC = '/topic/rooms';
export const roomTopic = (roomId: number): string => `/topic/message/${roomId}`;
export const MAX_TEXT = 4000;

export function parseRoomTopic(destination: string): number | null {
  const m = /^\/topic\/message\/(\d+)$/.exec(destination);
  return m ? Number(m[1]) : null;
}
