/**
 * The connection's heartbeat: a PING after `intervalMs` without a frame from the server; nothing
 * within `timeoutMs` more means the connection is dead (a half-open TCP connection is noticed).
 */
import type { Timers } from './transport';

export class Heartbeat {
  private pingTimer: unknown = null;
  private pongTimer: unknown = null;

  constructor(
    private readonly timers: Timers,
    private readonly intervalMs: number,
    private readonly timeoutMs: number,
    private readonly ping: () => void,
    private readonly dead: () => void,
  ) {}

  /** (Re)start the wait for silence: on open, and on every frame while armed. */
  arm(): void {
    this.stop();
    this.pingTimer = this.timers.setTimeout(() => {
      this.pingTimer = null;
      this.ping();
      this.pongTimer = this.timers.setTimeout(() => {
        this.pongTimer = null;
        this.dead();
      }, this.timeoutMs);
    }, this.intervalMs);
  }

  /** A frame arrived: it proves the connection alive. */
  alive(): void {
    if (this.armed) this.arm();
  }

  get armed(): boolean {
    return this.pingTimer !== null || this.pongTimer !== null;
  }

  stop(): void {
    if (this.pingTimer !== null) this.timers.clearTimeout(this.pingTimer);
    if (this.pongTimer !== null) this.timers.clearTimeout(this.pongTimer);
    this.pingTimer = this.pongTimer = null;
  }
}
