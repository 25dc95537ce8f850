/**
 * The user's read position per room (docs/protocol.md, "Read positions"): learnt from the room
 * list and from READ_POSITION frames (any of the user's tabs or devices), and reported with READ
 * frames, at most one per room per interval; a report held back by the interval goes out at its
 * end, with the newest seq reported meanwhile.
 */
import type { Timers } from './transport';

export const READ_REPORT_INTERVAL_MS = 1000;

export class ReadPositions {
  /** room -> the highest position known (stored by the server, or reported by us) */
  private readonly known = new Map<number, number>();
  /** room -> when the last READ for it went out */
  private readonly sentAt = new Map<number, number>();
  /** room -> the timer that sends the held-back report */
  private readonly held = new Map<number, unknown>();
  /** room -> the newest seq waiting for the interval to end */
  private readonly waiting = new Map<number, number>();

  constructor(
    private readonly timers: Timers,
    private readonly send: (roomId: number, seq: number) => boolean,
    private readonly intervalMs = READ_REPORT_INTERVAL_MS,
  ) {}

  position(roomId: number): number | null {
    return this.known.get(roomId) ?? null;
  }

  /** A position from the server; true when it moved ours forward. */
  learn(roomId: number, seq: number): boolean {
    const current = this.known.get(roomId);
    if (current !== undefined && current >= seq) return false;
    this.known.set(roomId, seq);
    return true;
  }

  /** Messages up to `seq` are on screen: report it (throttled) unless it is known already. */
  report(roomId: number, seq: number): void {
    if ((this.known.get(roomId) ?? -1) >= seq) return;
    const waiting = this.waiting.get(roomId);
    this.waiting.set(roomId, Math.max(seq, waiting ?? seq));
    if (this.held.has(roomId)) return;
    const since = this.timers.now() - (this.sentAt.get(roomId) ?? -Infinity);
    if (since >= this.intervalMs) this.flush(roomId);
    else this.held.set(roomId, this.timers.setTimeout(() => this.flush(roomId), this.intervalMs - since));
  }

  private flush(roomId: number): void {
    this.held.delete(roomId);
    const seq = this.waiting.get(roomId);
    this.waiting.delete(roomId);
    if (seq === undefined || (this.known.get(roomId) ?? -1) >= seq) return;
    if (!this.send(roomId, seq)) return; // not connected: the next report after reconnecting goes out
    this.sentAt.set(roomId, this.timers.now());
    this.known.set(roomId, seq);
  }

  /** The room is closed: a held-back report is dropped. */
  forget(roomId: number): void {
    const timer = this.held.get(roomId);
    if (timer !== undefined) this.timers.clearTimeout(timer);
    this.held.delete(roomId);
    this.waiting.delete(roomId);
  }
}
