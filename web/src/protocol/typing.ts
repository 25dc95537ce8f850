/**
 * Typing indicators (docs/protocol.md, "Typing"): who is typing in each open room, until
 * TYPING_SHOW_MS pass without a new TYPING from them or their message arrives; and the throttle
 * that sends our own TYPING at most every TYPING_SEND_INTERVAL_MS per room (the server passes on
 * one per 3 s; a little more leaves room for timer jitter).
 */
import type { Timers } from './transport';

export const TYPING_SHOW_MS = 5000;
export const TYPING_SEND_INTERVAL_MS = 3200;

export class TypingUsers {
  /** room -> user -> the timer that ends their indicator */
  private readonly rooms = new Map<number, Map<string, unknown>>();

  constructor(
    private readonly timers: Timers,
    private readonly changed: (roomId: number) => void,
    private readonly showMs = TYPING_SHOW_MS,
  ) {}

  users(roomId: number): string[] {
    return [...(this.rooms.get(roomId)?.keys() ?? [])];
  }

  /** A TYPING frame: shown (again) for showMs. */
  typing(roomId: number, userId: string): void {
    let users = this.rooms.get(roomId);
    if (!users) this.rooms.set(roomId, (users = new Map()));
    const timer = users.get(userId);
    const isNew = timer === undefined;
    if (!isNew) this.timers.clearTimeout(timer);
    users.set(userId, this.timers.setTimeout(() => this.stopped(roomId, userId), this.showMs));
    if (isNew) this.changed(roomId);
  }

  /** Their message arrived, or the indicator timed out. */
  stopped(roomId: number, userId: string): void {
    const users = this.rooms.get(roomId);
    const timer = users?.get(userId);
    if (!users || timer === undefined) return;
    this.timers.clearTimeout(timer);
    users.delete(userId);
    if (users.size === 0) this.rooms.delete(roomId);
    this.changed(roomId);
  }

  forget(roomId: number): void {
    for (const timer of this.rooms.get(roomId)?.values() ?? []) this.timers.clearTimeout(timer);
    this.rooms.delete(roomId);
  }
}

export class TypingThrottle {
  private readonly sentAt = new Map<number, number>();

  constructor(
    private readonly timers: Timers,
    private readonly intervalMs = TYPING_SEND_INTERVAL_MS,
  ) {}

  /** Whether a TYPING for the room may go out now; if so, it counts as sent. */
  take(roomId: number): boolean {
    const now = this.timers.now();
    if (now - (this.sentAt.get(roomId) ?? -Infinity) < this.intervalMs) return false;
    this.sentAt.set(roomId, now);
    return true;
  }
}
