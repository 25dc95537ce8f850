/**
 * The SENDs on the wire: which went out on which connection and is not answered yet, and the
 * timer that marks each failed when no answer comes.
 */
import type { Timers } from './transport';

export class SendTracker {
  private readonly timers = new Map<string, unknown>();
  /** clientMsgId -> connection generation its SEND went out on */
  private readonly inFlight = new Map<string, number>();

  constructor(
    private readonly clock: Timers,
    private readonly timeoutMs: number,
  ) {}

  /** the SEND of `clientMsgId` went out on connection `gen` and waits for an answer */
  sent(clientMsgId: string, gen: number, onTimeout: () => void): void {
    this.forget(clientMsgId);
    this.inFlight.set(clientMsgId, gen);
    this.timers.set(
      clientMsgId,
      this.clock.setTimeout(() => {
        this.forget(clientMsgId);
        onTimeout();
      }, this.timeoutMs),
    );
  }

  isInFlight(clientMsgId: string, gen: number): boolean {
    return this.inFlight.get(clientMsgId) === gen;
  }

  /** answered, failed, discarded or given up: no timer, not in flight */
  forget(clientMsgId: string): void {
    const t = this.timers.get(clientMsgId);
    if (t !== undefined) this.clock.clearTimeout(t);
    this.timers.delete(clientMsgId);
    this.inFlight.delete(clientMsgId);
  }

  /** the connection dropped: nothing is in flight any more (pending sends go again after the resume) */
  forgetAll(): void {
    for (const t of this.timers.values()) this.clock.clearTimeout(t);
    this.timers.clear();
    this.inFlight.clear();
  }
}
