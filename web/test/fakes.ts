import type { HistoryApi, Timers, WebSocketLike } from '../src/protocol/client';
import type { ChatMessage, ClientFrame } from '../src/protocol/types';

/** Manual clock: timers fire only when advance() passes their due time. */
export class FakeTimers implements Timers {
  private t = 0;
  private seq = 0;
  private readonly pending = new Map<number, { due: number; fn: () => void }>();

  setTimeout = (fn: () => void, ms: number): unknown => {
    this.seq += 1;
    this.pending.set(this.seq, { due: this.t + ms, fn });
    return this.seq;
  };

  clearTimeout = (h: unknown): void => {
    this.pending.delete(h as number);
  };

  now = (): number => this.t;

  /** Advance the clock, firing due timers in order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let next: [number, { due: number; fn: () => void }] | null = null;
      for (const e of this.pending) if (e[1].due <= end && (!next || e[1].due < next[1].due)) next = e;
      if (!next) break;
      this.pending.delete(next[0]);
      this.t = next[1].due;
      next[1].fn();
    }
    this.t = end;
  }

  get count(): number {
    return this.pending.size;
  }

  /** Due times of pending timers, relative to now. */
  delays(): number[] {
    return [...this.pending.values()].map((p) => p.due - this.t).sort((a, b) => a - b);
  }
}

export class FakeSocket implements WebSocketLike {
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  readonly sent: ClientFrame[] = [];
  closedByClient: { code?: number; reason?: string } | null = null;

  constructor(readonly url: string) {}

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('not open');
    this.sent.push(JSON.parse(data) as ClientFrame);
  }

  close(code?: number, reason?: string): void {
    this.closedByClient = { code, reason };
    this.readyState = 3;
  }

  // --- server side helpers
  open(nodeId = 'node-1'): void {
    this.readyState = 1;
    this.onopen?.({});
    this.push({ type: 'session-info', sessionId: `s-${nodeId}`, userId: 'me', nodeId });
  }

  push(frame: unknown): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  drop(code = 1006): void {
    this.readyState = 3;
    this.onclose?.({ code, reason: '' });
  }

  framesOf<T extends ClientFrame['type']>(type: T): Extract<ClientFrame, { type: T }>[] {
    return this.sent.filter((f) => f.type === type) as Extract<ClientFrame, { type: T }>[];
  }

  lastOf<T extends ClientFrame['type']>(type: T): Extract<ClientFrame, { type: T }> {
    const all = this.framesOf(type);
    if (!all.length) throw new Error(`no ${type} frame sent`);
    return all[all.length - 1];
  }
}

export function msg(roomId: number, seq: number, senderId = 'bob', text = `m${seq}`, extra: Partial<ChatMessage> = {}): ChatMessage {
  return {
    id: `id-${roomId}-${seq}`,
    roomId,
    seq,
    senderId,
    kind: 'chat',
    text,
    clientMsgId: null,
    sentAt: 1764072000000 + seq,
    ...extra,
  };
}

/** REST history over an in-memory list of messages per room (newest first, like the server). */
export class FakeHistory implements HistoryApi {
  readonly rooms = new Map<number, ChatMessage[]>();
  calls: { roomId: number; before: number | null; limit: number }[] = [];
  fail = false;

  add(...ms: ChatMessage[]): void {
    for (const m of ms) {
      const list = this.rooms.get(m.roomId) ?? [];
      list.push(m);
      list.sort((a, b) => a.seq - b.seq);
      this.rooms.set(m.roomId, list);
    }
  }

  async fetchMessages(roomId: number, before: number | null, limit: number): Promise<ChatMessage[]> {
    this.calls.push({ roomId, before, limit });
    if (this.fail) throw new Error('history down');
    const list = (this.rooms.get(roomId) ?? []).filter((m) => before === null || m.seq < before);
    return list.slice(-limit).reverse();
  }
}

export const flush = (): Promise<void> => new Promise((r) => setTimeout(r, 0));
