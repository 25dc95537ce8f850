import { beforeEach, describe, expect, it } from 'vitest';
import { RoomHistory, type HistoryHost } from '../src/protocol/history';
import type { RoomState } from '../src/protocol/roomState';
import { FakeHistory, FakeTimers, flush, msg } from './fakes';

let timers: FakeTimers;
let api: FakeHistory;
let rooms: Map<number, RoomState>;
let ready: boolean;
let gen: number;
/** SUBSCRIBE frames the host was asked to send: [roomId, since] */
let subscribes: [number, number | null][];
let hist: RoomHistory;

beforeEach(() => {
  timers = new FakeTimers();
  api = new FakeHistory();
  rooms = new Map();
  ready = true;
  gen = 1;
  subscribes = [];
  const host: HistoryHost = {
    rooms,
    changed: () => undefined,
    ready: () => ready,
    gen: () => gen,
    sendSubscribe: (roomId, since) => {
      subscribes.push([roomId, since]);
      return true;
    },
  };
  hist = new RoomHistory(host, api, timers, 50);
});

const seqs = (roomId: number): number[] => rooms.get(roomId)!.list.list().map((m) => m.seq);
const subscribed = (roomId: number, lastSeq: number | null): RoomState | null =>
  hist.subscribed({ type: 'SUBSCRIBED', destination: `/topic/message/${roomId}`, lastSeq });

describe('RoomHistory', () => {
  it('loads the newest page once, however often the room is opened, then subscribes from its newest seq', async () => {
    for (let s = 1; s <= 60; s++) api.add(msg(1, s));
    await Promise.all([hist.open(1), hist.open(1)]);
    expect(api.calls).toEqual([{ roomId: 1, before: null, limit: 50 }]);
    expect(seqs(1)).toEqual(Array.from({ length: 50 }, (_, i) => i + 11));
    expect(rooms.get(1)!.hasMore).toBe(true);
    expect(subscribes).toEqual([[1, 60]]);
    expect(rooms.get(1)!.subscribedGen).toBe(1);
  });

  it('waits for a ready connection, then resumes every loaded room from its highest seq', async () => {
    ready = false;
    api.add(msg(1, 5), msg(2, 7));
    await hist.open(1);
    await hist.open(2);
    expect(subscribes).toEqual([]);
    ready = true;
    gen = 2;
    hist.resumeAll();
    expect(subscribes).toEqual([
      [1, 5],
      [2, 7],
    ]);
    expect(rooms.get(2)!.subscribedGen).toBe(2);
  });

  it('takes SUBSCRIBED only for the current connection, and refetches a room that held nothing', async () => {
    await hist.open(1);
    expect(subscribes).toEqual([[1, null]]); // nothing held: no since
    gen = 2; // the answer of an older connection
    expect(subscribed(1, 3)).toBeNull();
    expect(rooms.get(1)!.live).toBe(false);
    gen = 1;
    api.add(msg(1, 2), msg(1, 3)); // sent between the history call and the subscription
    expect(subscribed(1, 3)).toBe(rooms.get(1));
    expect(rooms.get(1)!.live).toBe(true);
    await flush();
    expect(seqs(1)).toEqual([2, 3]);
    expect(subscribed(9, 1)).toBeNull(); // not open
  });

  it('asks again 1.5 s after UNAVAILABLE, with the same since', async () => {
    api.add(msg(1, 4));
    await hist.open(1);
    expect(hist.subscribeFailed(1, { code: 'UNAVAILABLE', message: 'down' })).toBe(true);
    expect(rooms.get(1)!.error?.code).toBe('UNAVAILABLE');
    expect(rooms.get(1)!.subscribedGen).toBeNull();
    timers.advance(1499);
    expect(subscribes.length).toBe(1);
    timers.advance(1);
    expect(subscribes).toEqual([
      [1, 4],
      [1, 4],
    ]);
  });

  it('starts again from the newest page after REPLAY_TOO_LONG, and does not retry other errors', async () => {
    api.add(msg(1, 1), msg(1, 2));
    await hist.open(1);
    api.add(msg(1, 500));
    hist.subscribeFailed(1, { code: 'REPLAY_TOO_LONG', message: 'too far' });
    expect(rooms.get(1)!.list.size).toBe(0);
    await flush();
    expect(seqs(1)).toEqual([1, 2, 500]);
    expect(subscribes.at(-1)).toEqual([1, 500]);
    const before = subscribes.length;
    hist.subscribeFailed(1, { code: 'NO_SUCH_ROOM', message: 'gone' });
    timers.advance(60000);
    expect(subscribes.length).toBe(before);
    expect(hist.subscribeFailed(7, { code: 'UNAVAILABLE', message: 'x' })).toBe(false);
  });

  it('loads older pages with before = lowest seq until a short page', async () => {
    for (let s = 1; s <= 70; s++) api.add(msg(1, s));
    await hist.open(1);
    expect(await hist.loadOlder(1)).toBe(20);
    expect(api.calls.at(-1)).toEqual({ roomId: 1, before: 21, limit: 50 });
    expect(rooms.get(1)!.hasMore).toBe(false);
    expect(await hist.loadOlder(1)).toBe(0);
    expect(api.calls.length).toBe(2);
    expect(seqs(1)[0]).toBe(1);
  });

  it('shows a failed history load on the room and rejects', async () => {
    api.fail = true;
    await expect(hist.open(1)).rejects.toThrow('history down');
    expect(rooms.get(1)!.error).toEqual({ code: 'HISTORY', message: 'history down' });
    expect(subscribes).toEqual([]);
    api.fail = false;
    await hist.open(1); // entering again retries
    expect(rooms.get(1)!.historyLoaded).toBe(true);
    expect(subscribes).toEqual([[1, null]]);
  });
});
