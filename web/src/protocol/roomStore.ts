import type { ChatMessage } from './types';

/**
 * The messages of one room: keyed by id (no duplicates), kept in seq order.
 * Insertion is O(log n) search + splice; rooms hold at most a few thousand messages in a session.
 */
export class MessageList {
  private readonly byId = new Map<string, ChatMessage>();
  private ordered: ChatMessage[] = [];

  get size(): number {
    return this.ordered.length;
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  get(id: string): ChatMessage | undefined {
    return this.byId.get(id);
  }

  /** Adds or replaces a message. Returns true when it was new. */
  upsert(msg: ChatMessage): boolean {
    const old = this.byId.get(msg.id);
    if (old) {
      this.byId.set(msg.id, msg);
      const i = this.ordered.indexOf(old);
      if (i >= 0 && old.seq === msg.seq) {
        this.ordered = this.ordered.slice();
        this.ordered[i] = msg;
        return false;
      }
      // seq changed (should not happen): reinsert
      this.ordered = this.ordered.filter((m) => m !== old);
    }
    this.byId.set(msg.id, msg);
    const arr = this.ordered.slice();
    // binary search for the first index with seq > msg.seq
    let lo = 0;
    let hi = arr.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (arr[mid].seq <= msg.seq) lo = mid + 1;
      else hi = mid;
    }
    arr.splice(lo, 0, msg);
    this.ordered = arr;
    return !old;
  }

  /** Returns a stable array (a new one after each change). */
  list(): readonly ChatMessage[] {
    return this.ordered;
  }

  highestSeq(): number | null {
    return this.ordered.length ? this.ordered[this.ordered.length - 1].seq : null;
  }

  lowestSeq(): number | null {
    return this.ordered.length ? this.ordered[0].seq : null;
  }

  findByClientMsgId(senderId: string, clientMsgId: string): ChatMessage | undefined {
    for (let i = this.ordered.length - 1; i >= 0; i--) {
      const m = this.ordered[i];
      if (m.clientMsgId === clientMsgId && m.senderId === senderId) return m;
    }
    return undefined;
  }
}
