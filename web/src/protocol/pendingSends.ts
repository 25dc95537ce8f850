/**
 * Pending sends: each message is pending until its ACK (or its own ROOM_MESSAGE), failed after an
 * ERROR or a timeout, retried with the same clientMsgId. A SEND waits for its room's subscription
 * on the current connection; what is pending across a reconnect goes again after the resume. A
 * SEND refused RATE_LIMITED stays pending and goes again after the server's `retryAfterMs`, a few
 * times in a row at most: the server stored nothing, and a fast typist should not lose a message.
 */
import type { PendingMessage, RoomState } from './roomState';
import { SendTracker } from './sendTracker';
import type { Timers } from './transport';
import { MAX_TEXT, retryDelayMs, type ServerFrame } from './types';

/** RATE_LIMITED answers in a row after which a message is failed and left to the user. */
export const MAX_RATE_LIMITED_RETRIES = 5;

/** Length in code points, as the server counts it. */
export function textLength(text: string): number {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

/** What pending sends need of the client. */
export interface SendHost {
  readonly userId: string;
  room(roomId: number): RoomState | undefined;
  rooms(): Iterable<RoomState>;
  changed(room: RoomState): void;
  /** the connection generation now */
  gen(): number;
  /** put the SEND of `p` on the wire (with a ref that names it); false when it could not go */
  transmitSend(room: RoomState, p: PendingMessage): boolean;
  /** enter the room again: the server says the subscription is gone */
  resubscribe(room: RoomState): void;
}

export class PendingSends {
  private readonly tracker: SendTracker;
  /** messages whose NOT_SUBSCRIBED already made us re-enter the room once */
  private readonly resubscribed = new Set<string>();
  /** RATE_LIMITED answers each message has had since it was last sent by the user */
  private readonly rateLimited = new Map<string, number>();

  constructor(
    private readonly host: SendHost,
    private readonly timers: Timers,
    timeoutMs: number,
    private readonly newClientMsgId: () => string,
  ) {
    this.tracker = new SendTracker(timers, timeoutMs);
  }

  /** Queue a chat message; returns its clientMsgId. Throws on empty or too long text. */
  send(roomId: number, text: string): string {
    if (text.trim().length === 0) throw new Error('empty message');
    if (textLength(text) > MAX_TEXT) throw new Error('message too long');
    const room = this.host.room(roomId);
    if (!room) throw new Error(`room ${roomId} is not open`);
    const clientMsgId = this.newClientMsgId();
    const p: PendingMessage = { clientMsgId, roomId, text, status: 'pending', createdAt: this.timers.now(), error: null };
    room.pending.set(clientMsgId, p);
    this.host.changed(room);
    this.transmit(room, p);
    return clientMsgId;
  }

  /** Send a failed message again with the same clientMsgId (the server stores it once). */
  retry(clientMsgId: string): void {
    for (const room of this.host.rooms()) {
      const p = room.pending.get(clientMsgId);
      if (!p) continue;
      const np: PendingMessage = { ...p, status: 'pending', error: null };
      room.pending.set(clientMsgId, np);
      this.host.changed(room);
      this.transmit(room, np);
      return;
    }
  }

  /** Forget a failed message. */
  discard(clientMsgId: string): void {
    for (const room of this.host.rooms()) {
      if (room.pending.delete(clientMsgId)) {
        this.tracker.forget(clientMsgId);
        this.rateLimited.delete(clientMsgId);
        this.host.changed(room);
        return;
      }
    }
  }

  /** The room is live (SUBSCRIBED): what waits goes out. */
  flush(room: RoomState): void {
    for (const p of room.pending.values()) this.transmit(room, p);
  }

  /** The room is closed: its sends are given up. */
  forgetRoom(room: RoomState): void {
    for (const p of room.pending.keys()) {
      this.tracker.forget(p);
      this.rateLimited.delete(p);
    }
  }

  /** The connection dropped: nothing is in flight any more. */
  disconnected(): void {
    this.tracker.forgetAll();
  }

  /** Our own message arrived: its send is settled. */
  delivered(room: RoomState, clientMsgId: string): void {
    if (room.pending.has(clientMsgId)) this.settle(room, clientMsgId);
  }

  /** ACK: settled; the message shows at once, the ROOM_MESSAGE with its id replaces it. */
  acked(frame: Extract<ServerFrame, { type: 'ACK' }>, sent: { clientMsgId: string; roomId: number } | undefined): void {
    const clientMsgId = frame.clientMsgId ?? sent?.clientMsgId ?? null;
    const roomId = frame.roomId ?? sent?.roomId ?? null;
    if (!clientMsgId || roomId === null) return;
    const room = this.host.room(roomId);
    const p = room?.pending.get(clientMsgId);
    if (!room || !p) return;
    if (!room.list.has(frame.id) && typeof frame.seq === 'number') {
      room.list.upsert({ id: frame.id, roomId, seq: frame.seq, senderId: this.host.userId, kind: 'chat', text: p.text, clientMsgId, sentAt: this.timers.now() });
    }
    this.settle(room, clientMsgId);
    this.host.changed(room);
  }

  /** ERROR to a SEND: NOT_SUBSCRIBED re-enters the room once and RATE_LIMITED waits and sends again
   * (the message stays pending); anything else fails it. */
  refused(sent: { clientMsgId: string; roomId: number }, err: { code: string; message: string }, retryAfterMs?: number): void {
    if (err.code === 'RATE_LIMITED' && this.sendLater(sent, retryAfterMs)) return;
    if (err.code === 'NOT_SUBSCRIBED') {
      const room = this.host.room(sent.roomId);
      if (room) {
        this.tracker.forget(sent.clientMsgId);
        const p = room.pending.get(sent.clientMsgId);
        if (p && p.status === 'pending' && room.live && !this.resubscribed.has(p.clientMsgId)) {
          this.resubscribed.add(p.clientMsgId);
          this.host.resubscribe(room);
          return;
        }
      }
    }
    this.fail(sent.roomId, sent.clientMsgId, err);
  }

  /** Send a rate-limited message again after the hint; false when it has waited often enough. */
  private sendLater(sent: { clientMsgId: string; roomId: number }, retryAfterMs: number | undefined): boolean {
    const times = (this.rateLimited.get(sent.clientMsgId) ?? 0) + 1;
    if (times > MAX_RATE_LIMITED_RETRIES) return false;
    const p = this.host.room(sent.roomId)?.pending.get(sent.clientMsgId);
    if (!p || p.status !== 'pending') return true;
    this.rateLimited.set(sent.clientMsgId, times);
    this.tracker.forget(sent.clientMsgId); // no TIMEOUT while it waits; the resend starts a new one
    this.timers.setTimeout(() => {
      const room = this.host.room(sent.roomId);
      const waiting = room?.pending.get(sent.clientMsgId);
      if (room && waiting) this.transmit(room, waiting);
    }, retryDelayMs(retryAfterMs));
    return true;
  }

  private transmit(room: RoomState, p: PendingMessage): void {
    if (p.status !== 'pending') return;
    if (!room.live || this.tracker.isInFlight(p.clientMsgId, this.host.gen())) return; // flushed on SUBSCRIBED
    if (!this.host.transmitSend(room, p)) return;
    this.tracker.sent(p.clientMsgId, this.host.gen(), () =>
      this.fail(room.roomId, p.clientMsgId, { code: 'TIMEOUT', message: 'no answer from the server' }),
    );
  }

  private fail(roomId: number, clientMsgId: string, error: { code: string; message: string }): void {
    const room = this.host.room(roomId);
    const p = room?.pending.get(clientMsgId);
    if (!room || !p) return;
    this.tracker.forget(clientMsgId);
    this.rateLimited.delete(clientMsgId);
    room.pending.set(clientMsgId, { ...p, status: 'failed', error });
    this.host.changed(room);
  }

  private settle(room: RoomState, clientMsgId: string): void {
    this.tracker.forget(clientMsgId);
    this.rateLimited.delete(clientMsgId);
    room.pending.delete(clientMsgId);
  }
}
