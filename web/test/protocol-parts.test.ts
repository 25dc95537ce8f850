import { describe, expect, it } from 'vitest';
import { Backoff } from '../src/protocol/backoff';
import { Heartbeat } from '../src/protocol/heartbeat';
import { addHistoryPage, markNotLive, newRoomState, viewOf } from '../src/protocol/roomState';
import { MessageList } from '../src/protocol/roomStore';
import { SendTracker } from '../src/protocol/sendTracker';
import { FakeTimers, msg } from './fakes';

describe('MessageList', () => {
  it('keeps seq order and drops duplicates by id', () => {
    const l = new MessageList();
    expect(l.upsert(msg(1, 30))).toBe(true);
    expect(l.upsert(msg(1, 10))).toBe(true);
    expect(l.upsert(msg(1, 20))).toBe(true);
    expect(l.upsert(msg(1, 20))).toBe(false);
    expect(l.upsert(msg(1, 10, 'bob', 'changed'))).toBe(false);
    expect(l.list().map((m) => m.seq)).toEqual([10, 20, 30]);
    expect(l.list()[0].text).toBe('changed');
    expect(l.highestSeq()).toBe(30);
    expect(l.lowestSeq()).toBe(10);
  });

  it('returns a new array after each change (snapshot stability)', () => {
    const l = new MessageList();
    l.upsert(msg(1, 1));
    const a = l.list();
    expect(l.list()).toBe(a);
    l.upsert(msg(1, 2));
    expect(l.list()).not.toBe(a);
    expect(a.length).toBe(1);
  });
});

describe('Backoff', () => {
  it('grows exponentially, is capped, and jitters', () => {
    const b = new Backoff({ baseMs: 100, maxMs: 1000, random: () => 1 });
    expect([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()]).toEqual([100, 200, 400, 800, 1000, 1000]);
    const lo = new Backoff({ baseMs: 100, maxMs: 1000, random: () => 0 });
    expect([lo.next(), lo.next(), lo.next()]).toEqual([50, 100, 200]);
    lo.reset();
    expect(lo.next()).toBe(50);
    const r = new Backoff({ baseMs: 1000, maxMs: 60000 });
    for (let i = 0; i < 50; i++) {
      const d = r.next();
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThanOrEqual(60000);
    }
  });
});
describe('Heartbeat', () => {
  it('pings after silence and declares the connection dead when nothing follows', () => {
    const timers = new FakeTimers();
    const events: string[] = [];
    const hb = new Heartbeat(timers, 20000, 10000, () => events.push('ping'), () => events.push('dead'));
    hb.arm();
    timers.advance(19999);
    expect(events).toEqual([]);
    timers.advance(1);
    expect(events).toEqual(['ping']);
    timers.advance(10000);
    expect(events).toEqual(['ping', 'dead']);
  });

  it('any frame restarts the wait; stopped, it does nothing', () => {
    const timers = new FakeTimers();
    const events: string[] = [];
    const hb = new Heartbeat(timers, 20000, 10000, () => events.push('ping'), () => events.push('dead'));
    hb.arm();
    timers.advance(25000); // pinged, waiting for an answer
    hb.alive();
    timers.advance(15000);
    expect(events).toEqual(['ping']);
    hb.stop();
    hb.alive(); // not armed: stays stopped
    timers.advance(60000);
    expect(events).toEqual(['ping']);
    expect(timers.count).toBe(0);
  });
});

describe('SendTracker', () => {
  it('times a SEND out once, then forgets it', () => {
    const timers = new FakeTimers();
    const sends = new SendTracker(timers, 15000);
    const failed: string[] = [];
    sends.sent('c-1', 3, () => failed.push('c-1'));
    expect(sends.isInFlight('c-1', 3)).toBe(true);
    expect(sends.isInFlight('c-1', 4)).toBe(false);
    timers.advance(15000);
    expect(failed).toEqual(['c-1']);
    expect(sends.isInFlight('c-1', 3)).toBe(false);
  });

  it('forget and forgetAll cancel the timers; sending again restarts the timer', () => {
    const timers = new FakeTimers();
    const sends = new SendTracker(timers, 15000);
    const failed: string[] = [];
    sends.sent('c-1', 1, () => failed.push('c-1'));
    sends.sent('c-2', 1, () => failed.push('c-2'));
    timers.advance(10000);
    sends.sent('c-2', 2, () => failed.push('c-2 again'));
    sends.forget('c-1');
    timers.advance(10000);
    expect(failed).toEqual([]);
    sends.forgetAll();
    timers.advance(60000);
    expect(failed).toEqual([]);
    expect(timers.count).toBe(0);
  });
});

describe('room state', () => {
  it('a full history page means more may exist; duplicates are dropped', () => {
    const room = newRoomState(7);
    room.hasMore = false;
    expect(addHistoryPage(room, [msg(7, 3), msg(7, 2)], 2)).toBe(2);
    expect(room.hasMore).toBe(true);
    expect(addHistoryPage(room, [msg(7, 2), msg(7, 1)], 50)).toBe(1);
    expect(viewOf(room).messages.map((m) => m.seq)).toEqual([1, 2, 3]);
  });

  it('the view is cached until a change, and a drop makes the room not live', () => {
    const room = newRoomState(7);
    room.live = true;
    room.subscribedGen = 4;
    const v = viewOf(room);
    expect(viewOf(room)).toBe(v);
    markNotLive(room);
    expect(room.subscribedGen).toBeNull();
    expect(viewOf(room)).not.toBe(v);
    expect(viewOf(room).live).toBe(false);
  });
});
