import { beforeEach, describe, expect, it } from 'vitest';
import { ChatClient } from '../src/protocol/client';
import { MAX_RATE_LIMITED_RETRIES } from '../src/protocol/pendingSends';
import { FakeHistory, FakeSocket, FakeTimers, flush, msg } from './fakes';

let timers: FakeTimers;
let sockets: FakeSocket[];
let history: FakeHistory;
let client: ChatClient;
let ids: number;

function makeClient(extra: Partial<ConstructorParameters<typeof ChatClient>[0]> = {}): ChatClient {
  return new ChatClient({
    userId: 'me',
    url: () => 'ws://test/ws',
    wsFactory: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    history,
    timers,
    backoff: { baseMs: 500, maxMs: 8000, random: () => 0.5 },
    newClientMsgId: () => `c-${++ids}`,
    ...extra,
  });
}

const last = (): FakeSocket => sockets[sockets.length - 1];

/** Let `ms` pass on a live node: each heartbeat PING is answered at once. */
function answerPingsFor(ws: FakeSocket, ms: number): void {
  let answered = ws.framesOf('PING').length;
  for (let t = 0; t < ms; t += 100) {
    timers.advance(100);
    const pings = ws.framesOf('PING');
    if (pings.length > answered) {
      answered = pings.length;
      ws.push({ type: 'PONG', ref: pings[pings.length - 1].ref });
    }
  }
}
const texts = (roomId: number): string[] => client.getRoom(roomId)!.messages.map((m) => m.text);
const seqs = (roomId: number): number[] => client.getRoom(roomId)!.messages.map((m) => m.seq);

beforeEach(() => {
  timers = new FakeTimers();
  sockets = [];
  history = new FakeHistory();
  ids = 0;
  client = makeClient();
});

async function openConnectedRoom(roomId: number): Promise<FakeSocket> {
  client.start();
  last().open();
  await client.openRoom(roomId);
  const ws = last();
  const sub = ws.lastOf('SUBSCRIBE');
  ws.push({ type: 'SUBSCRIBED', ref: sub.ref, destination: sub.destination, lastSeq: client.getRoom(roomId)!.messages.at(-1)?.seq ?? null });
  return ws;
}

describe('ChatClient connection', () => {
  it('connects, reports the node, subscribes to the room list', () => {
    client.watchRooms();
    client.start();
    expect(client.getSnapshot().status).toBe('connecting');
    last().open('node-2');
    expect(client.getSnapshot()).toMatchObject({ status: 'connected', nodeId: 'node-2' });
    expect(last().lastOf('SUBSCRIBE').destination).toBe('/topic/rooms');
  });

  it('emits ROOM_CREATED', () => {
    const seen: string[] = [];
    client.on('roomCreated', (r) => seen.push(r.name));
    client.start();
    last().open();
    last().push({ type: 'ROOM_CREATED', room: { id: 5, name: 'general', createdBy: 'bob', createdAt: 'x', memberCount: 0 } });
    expect(seen).toEqual(['general']);
  });

  it('reconnects with growing, capped backoff and resets it after a good connection', () => {
    client.start();
    last().open();
    last().drop();
    expect(client.getSnapshot().status).toBe('reconnecting');
    expect(timers.delays()).toEqual([375]); // 500 * (0.5 + 0.5*0.5)
    const delays: number[] = [];
    for (let i = 0; i < 6; i++) {
      const [d] = timers.delays();
      delays.push(d);
      timers.advance(d);
      expect(sockets.length).toBe(2 + i);
      last().drop();
    }
    expect(delays).toEqual([375, 750, 1500, 3000, 6000, 6000]);
    expect(client.getSnapshot().status).toBe('offline'); // many failures in a row
    timers.advance(timers.delays()[0]);
    last().open('node-3');
    expect(client.getSnapshot()).toMatchObject({ status: 'connected', nodeId: 'node-3' });
    last().drop();
    expect(timers.delays()).toEqual([375]);
  });

  it('stops, without reconnecting, when the session is another user\'s (a shared cookie)', () => {
    const others: string[] = [];
    client.on('userMismatch', (info) => others.push(info.userId));
    client.start();
    const socket = last();
    socket.readyState = 1;
    socket.onopen?.({});
    socket.push({ type: 'session-info', sessionId: 's-1', userId: 'someone-else', nodeId: 'node-1' });
    expect(others).toEqual(['someone-else']);
    expect(client.getSnapshot().status).toBe('closed');
    expect(socket.closedByClient).not.toBeNull();
    timers.advance(60000);
    expect(sockets.length).toBe(1);
  });

  it('does not reconnect after stop() and stops on 1008 (auth)', () => {
    let expired = 0;
    client.on('authExpired', () => expired++);
    client.start();
    last().open();
    last().drop(1008);
    expect(expired).toBe(1);
    expect(client.getSnapshot().status).toBe('closed');
    timers.advance(60000);
    expect(sockets.length).toBe(1);

    const c2 = makeClient();
    c2.start();
    last().open();
    c2.stop();
    timers.advance(60000);
    expect(sockets.length).toBe(2);
    expect(c2.getSnapshot().status).toBe('closed');
  });

  it('stops on 4001 (token expired during the session)', () => {
    let expired = 0;
    client.on('authExpired', () => expired++);
    client.start();
    last().open();
    last().drop(4001);
    expect(expired).toBe(1);
    expect(client.getSnapshot().status).toBe('closed');
    timers.advance(60000);
    expect(sockets.length).toBe(1);
  });

  it('asks the auth check after two failed connects and logs out on a refused token', async () => {
    const asked: number[] = [];
    client = makeClient({
      checkAuth: async () => {
        asked.push(sockets.length);
        return 'refused';
      },
    });
    let expired = 0;
    client.on('authExpired', () => expired++);
    client.start();
    last().drop(1006); // refused handshake: the browser says 1006, never opened
    expect(asked).toEqual([]);
    timers.advance(timers.delays()[0]);
    last().drop(1006);
    await flush();
    expect(asked).toEqual([2]);
    expect(expired).toBe(1);
    expect(client.getSnapshot().status).toBe('closed');
    timers.advance(60000);
    expect(sockets.length).toBe(2);
  });

  it('keeps reconnecting when the auth check says valid or cannot tell', async () => {
    const verdicts = ['valid', 'unknown'] as const;
    let n = 0;
    client = makeClient({ checkAuth: async () => verdicts[Math.min(n++, 1)] });
    let expired = 0;
    client.on('authExpired', () => expired++);
    client.start();
    for (let i = 0; i < 3; i++) {
      last().drop(1006);
      await flush();
      timers.advance(timers.delays().at(-1)!);
    }
    expect(n).toBe(2);
    expect(expired).toBe(0);
    expect(sockets.length).toBe(4);
    last().open();
    expect(client.getSnapshot().status).toBe('connected');
  });

  it('does not count a connection that opened as a failed connect', async () => {
    let asked = 0;
    client = makeClient({ checkAuth: async () => { asked++; return 'refused'; } });
    client.start();
    for (let i = 0; i < 3; i++) {
      last().open();
      last().drop(1006);
      timers.advance(timers.delays().at(-1)!);
    }
    await flush();
    expect(asked).toBe(0);
    expect(client.getSnapshot().status).not.toBe('closed');
  });

  it('pings after 5 s of silence and drops a connection whose PONG does not come within 4 s', () => {
    client.start();
    last().open();
    timers.advance(5000);
    expect(last().framesOf('PING').length).toBe(1);
    last().push({ type: 'PONG', ref: last().lastOf('PING').ref });
    timers.advance(5000);
    expect(last().framesOf('PING').length).toBe(2);
    timers.advance(3999);
    expect(sockets[0].closedByClient).toBeNull();
    timers.advance(1); // no answer
    expect(sockets[0].closedByClient).toEqual({ code: 4000, reason: 'heartbeat timeout' });
    expect(client.getSnapshot().status).toBe('reconnecting');
    timers.advance(timers.delays()[0]);
    expect(sockets.length).toBe(2);
  });

  it('gives up a socket that does not open within 3 s, and waits twice as long after each such failure', () => {
    client.start();
    timers.advance(2999);
    expect(sockets[0].closedByClient).toBeNull();
    timers.advance(1);
    expect(sockets[0].closedByClient).toEqual({ code: 4000, reason: 'open timeout' });
    timers.advance(timers.delays()[0]);
    expect(sockets.length).toBe(2);
    timers.advance(5999);
    expect(sockets[1].closedByClient).toBeNull();
    timers.advance(1);
    expect(sockets[1].closedByClient).toEqual({ code: 4000, reason: 'open timeout' });
    timers.advance(timers.delays()[0]);
    last().open('node-2'); // a slow network that gets through
    expect(client.getSnapshot()).toMatchObject({ status: 'connected', nodeId: 'node-2' });
    expect(timers.delays()).toEqual([5000]); // only the heartbeat's wait: the open timeout is off
  });

  it('reconnects after a graceful 1012 close and goes offline/online with the browser', () => {
    client.start();
    last().open('node-1');
    last().drop(1012);
    expect(client.getSnapshot().status).toBe('reconnecting');
    client.setNetworkOnline(false);
    expect(client.getSnapshot().status).toBe('offline');
    timers.advance(timers.delays()[0]);
    last().drop();
    expect(client.getSnapshot().status).toBe('offline');
    const before = sockets.length;
    client.setNetworkOnline(true); // back online: try at once, without waiting for the backoff
    expect(sockets.length).toBe(before + 1);
    last().open('node-2');
    expect(client.getSnapshot()).toMatchObject({ status: 'connected', nodeId: 'node-2' });
  });

  it('reconnectNow skips the wait', () => {
    client.start();
    last().open();
    last().drop();
    expect(sockets.length).toBe(1);
    client.reconnectNow();
    expect(sockets.length).toBe(2);
    expect(timers.delays()).toEqual([3000]); // no backoff wait left: only the new socket's open timeout
  });

  it('ignores frames from an old socket', async () => {
    await openConnectedRoom(1);
    const old = last();
    old.drop();
    old.push({ type: 'ROOM_MESSAGE', message: msg(1, 5) });
    expect(texts(1)).toEqual([]);
  });
});

/** Issue 15's target: the clients of a node that stops answering resume on another node within
 * 15 s of its last frame (docs/protocol.md, "Liveness: client pings"). Default heartbeat and open
 * timeout, the default backoff with the longest jitter. */
describe('ChatClient on a node that stops answering', () => {
  const TARGET_MS = 15000;

  /** Fire timers, in order, until a new socket is asked for; fails past the target. */
  function untilNewSocket(since: number): FakeSocket {
    const n = sockets.length;
    while (sockets.length === n) {
      const next = timers.delays()[0];
      if (next === undefined || timers.now() + next - since > TARGET_MS) throw new Error('no new connection within the target');
      timers.advance(next);
    }
    return last();
  }

  async function resumedRoom(): Promise<{ hung: FakeSocket; lastFrameAt: number }> {
    client = makeClient({ backoff: { random: () => 1 } });
    history.add(msg(1, 1), msg(1, 2));
    const hung = await openConnectedRoom(1); // its SUBSCRIBED is the node's last frame
    return { hung, lastFrameAt: timers.now() };
  }

  function resumeOn(ws: FakeSocket, lastFrameAt: number): number {
    ws.open('node-2');
    const sub = ws.lastOf('SUBSCRIBE');
    expect(sub).toMatchObject({ destination: '/topic/message/1', since: 2 });
    ws.push({ type: 'SUBSCRIBED', ref: sub.ref, destination: sub.destination, lastSeq: 3 });
    ws.push({ type: 'ROOM_MESSAGE', message: msg(1, 3) }); // the replay of what was missed
    expect(client.getRoom(1)!.live).toBe(true);
    expect(seqs(1)).toEqual([1, 2, 3]);
    return timers.now() - lastFrameAt;
  }

  it('drops it after a missed PONG and resumes on another node 9.5 s after its last frame', async () => {
    const { hung, lastFrameAt } = await resumedRoom();
    const next = untilNewSocket(lastFrameAt);
    expect(hung.framesOf('PING').length).toBe(1);
    expect(hung.closedByClient?.reason).toBe('heartbeat timeout');
    const took = resumeOn(next, lastFrameAt);
    expect(took).toBe(9500); // 5 s silence + 4 s for the PONG + 0.5 s backoff
    expect(took).toBeLessThan(TARGET_MS);
  });

  it('still resumes within the target when the first new connection hangs on the same node', async () => {
    const { lastFrameAt } = await resumedRoom();
    const again = untilNewSocket(lastFrameAt); // the load balancer picks the hung node: it never opens
    const next = untilNewSocket(lastFrameAt);
    expect(again.closedByClient?.reason).toBe('open timeout');
    const took = resumeOn(next, lastFrameAt);
    expect(took).toBe(13500); // + 3 s open timeout + 1 s second backoff step
    expect(took).toBeLessThan(TARGET_MS);
  });
});

describe('ChatClient rooms', () => {
  it('loads the latest history, then subscribes with since = highest seq', async () => {
    for (let s = 1; s <= 60; s++) history.add(msg(1, s * 10));
    client.start();
    last().open();
    await client.openRoom(1);
    expect(history.calls[0]).toEqual({ roomId: 1, before: null, limit: 50 });
    expect(seqs(1)[0]).toBe(110);
    expect(seqs(1).length).toBe(50);
    expect(client.getRoom(1)!.hasMore).toBe(true);
    const sub = last().lastOf('SUBSCRIBE');
    expect(sub).toMatchObject({ destination: '/topic/message/1', since: 600 });
  });

  it('subscribes without since when the room is empty, and refetches if messages appeared meanwhile', async () => {
    client.start();
    last().open();
    await client.openRoom(7);
    const sub = last().lastOf('SUBSCRIBE');
    expect(sub.since).toBeUndefined();
    history.add(msg(7, 3)); // sent between the history call and the subscription
    last().push({ type: 'SUBSCRIBED', ref: sub.ref, destination: sub.destination, lastSeq: 3 });
    await flush();
    expect(seqs(7)).toEqual([3]);
  });

  it('waits for the connection before subscribing', async () => {
    history.add(msg(1, 4));
    client.start();
    await client.openRoom(1);
    expect(last().sent).toEqual([]);
    last().open();
    expect(last().lastOf('SUBSCRIBE')).toMatchObject({ since: 4 });
  });

  it('loads older pages with before = lowest seq until exhausted', async () => {
    for (let s = 1; s <= 120; s++) history.add(msg(1, s));
    await openConnectedRoom(1);
    expect(seqs(1)[0]).toBe(71);
    expect(await client.loadOlder(1)).toBe(50);
    expect(history.calls.at(-1)).toEqual({ roomId: 1, before: 71, limit: 50 });
    expect(seqs(1)[0]).toBe(21);
    expect(await client.loadOlder(1)).toBe(20);
    expect(client.getRoom(1)!.hasMore).toBe(false);
    expect(await client.loadOlder(1)).toBe(0);
    expect(seqs(1)).toEqual(Array.from({ length: 120 }, (_, i) => i + 1));
  });

  it('de-duplicates by id and keeps seq order for live, replayed and history messages', async () => {
    history.add(msg(1, 10), msg(1, 20));
    const ws = await openConnectedRoom(1);
    const got: number[] = [];
    client.on('message', (m) => got.push(m.seq));
    ws.push({ type: 'ROOM_MESSAGE', message: msg(1, 40) });
    ws.push({ type: 'ROOM_MESSAGE', message: msg(1, 30) }); // out of order
    ws.push({ type: 'ROOM_MESSAGE', message: msg(1, 40) }); // duplicate
    ws.push({ type: 'ROOM_MESSAGE', message: msg(1, 20) }); // duplicate of history
    ws.push({ type: 'ROOM_MESSAGE', message: msg(2, 25) }); // another room: ignored
    expect(seqs(1)).toEqual([10, 20, 30, 40]);
    expect(got).toEqual([40, 30]);
  });

  it('reports subscription errors on the room', async () => {
    client.start();
    last().open();
    await client.openRoom(99);
    const sub = last().lastOf('SUBSCRIBE');
    last().push({ type: 'ERROR', code: 'NO_SUCH_ROOM', message: 'no room 99', ref: sub.ref });
    expect(client.getRoom(99)!.error).toEqual({ code: 'NO_SUCH_ROOM', message: 'no room 99' });
  });

  it('subscribes again with the same since after UNAVAILABLE, and clears the error once in', async () => {
    history.add(msg(1, 10), msg(1, 20));
    client.start();
    last().open();
    await client.openRoom(1);
    const ws = last();
    const first = ws.lastOf('SUBSCRIBE');
    expect(first.since).toBe(20);
    ws.push({ type: 'ERROR', code: 'UNAVAILABLE', message: 'history not stored yet for resume, retry', ref: first.ref });
    expect(client.getRoom(1)!.error?.code).toBe('UNAVAILABLE');
    timers.advance(1000);
    expect(ws.lastOf('SUBSCRIBE').ref).toBe(first.ref);
    timers.advance(1000);
    const again = ws.lastOf('SUBSCRIBE');
    expect(again.ref).not.toBe(first.ref);
    expect(again.since).toBe(20);
    ws.push({ type: 'ROOM_MESSAGE', message: msg(1, 30) });
    ws.push({ type: 'SUBSCRIBED', ref: again.ref, destination: again.destination, lastSeq: 30 });
    expect(client.getRoom(1)!.error).toBeNull();
    expect(seqs(1)).toEqual([10, 20, 30]);
  });

  it('after REPLAY_TOO_LONG, reloads the newest page and subscribes from its newest seq', async () => {
    history.add(msg(1, 10), msg(1, 20));
    client.start();
    last().open();
    await client.openRoom(1);
    const ws = last();
    const first = ws.lastOf('SUBSCRIBE');
    expect(first.since).toBe(20);
    history.rooms.set(1, []);
    for (let seq = 5000; seq < 5100; seq++) history.add(msg(1, seq)); // far more than one page
    ws.push({ type: 'ERROR', code: 'REPLAY_TOO_LONG', message: 'more than 1000 messages', ref: first.ref });
    await flush();
    const again = ws.lastOf('SUBSCRIBE');
    expect(again.ref).not.toBe(first.ref);
    expect(again.since).toBe(5099);
    expect(seqs(1)[0]).toBeGreaterThan(20); // the old messages were dropped: no gap before the new page
    expect(seqs(1).at(-1)).toBe(5099);
    expect(client.getRoom(1)!.hasMore).toBe(true);
    ws.push({ type: 'SUBSCRIBED', ref: again.ref, destination: again.destination, lastSeq: 5099 });
    expect(client.getRoom(1)!.error).toBeNull();
  });

  it('does not subscribe again after an error other than UNAVAILABLE, or to a closed room', async () => {
    client.start();
    last().open();
    await client.openRoom(99);
    const ws = last();
    ws.push({ type: 'ERROR', code: 'NO_SUCH_ROOM', message: 'no room 99', ref: ws.lastOf('SUBSCRIBE').ref });
    await client.openRoom(98);
    const sub98 = ws.lastOf('SUBSCRIBE');
    ws.push({ type: 'ERROR', code: 'UNAVAILABLE', message: 'retry', ref: sub98.ref });
    client.closeRoom(98);
    const subscribes = ws.framesOf('SUBSCRIBE').length;
    timers.advance(10_000);
    expect(ws.framesOf('SUBSCRIBE').length).toBe(subscribes);
  });

  it('unsubscribes when a room is closed', async () => {
    const ws = await openConnectedRoom(1);
    client.closeRoom(1);
    expect(ws.lastOf('UNSUBSCRIBE').destination).toBe('/topic/message/1');
    expect(client.getRoom(1)).toBeUndefined();
  });
});

describe('ChatClient resume', () => {
  it('resumes every open room with since = highest seq after a drop, with no gap and no duplicate', async () => {
    history.add(msg(1, 1), msg(1, 2), msg(2, 100));
    client.watchRooms();
    const ws1 = await openConnectedRoom(1);
    await client.openRoom(2);
    const sub2 = ws1.lastOf('SUBSCRIBE');
    ws1.push({ type: 'SUBSCRIBED', ref: sub2.ref, destination: sub2.destination, lastSeq: 100 });
    ws1.push({ type: 'ROOM_MESSAGE', message: msg(1, 3) });
    ws1.drop();
    expect(client.getRoom(1)!.live).toBe(false);

    const reconnected: boolean[] = [];
    client.on('connected', (i) => reconnected.push(i.reconnect));
    timers.advance(timers.delays()[0]);
    const ws2 = last();
    expect(ws2).not.toBe(ws1);
    ws2.open('node-2');
    expect(reconnected).toEqual([true]);
    const subs = ws2.framesOf('SUBSCRIBE');
    expect(subs.map((s) => [s.destination, s.since])).toEqual([
      ['/topic/rooms', undefined],
      ['/topic/message/1', 3],
      ['/topic/message/2', 100],
    ]);
    // the server replays seq > 3 (including an overlap it may send), then goes live
    ws2.push({ type: 'ROOM_MESSAGE', message: msg(1, 3) });
    ws2.push({ type: 'ROOM_MESSAGE', message: msg(1, 5) });
    ws2.push({ type: 'ROOM_MESSAGE', message: msg(1, 7) });
    ws2.push({ type: 'SUBSCRIBED', ref: subs[1].ref, destination: subs[1].destination, lastSeq: 7 });
    ws2.push({ type: 'ROOM_MESSAGE', message: msg(1, 9) });
    expect(seqs(1)).toEqual([1, 2, 3, 5, 7, 9]);
    expect(client.getRoom(1)!.live).toBe(true);
    expect(client.getSnapshot().nodeId).toBe('node-2');
  });

  it('resumes from the newest seq even when messages arrived out of order', async () => {
    history.add(msg(1, 10));
    const ws = await openConnectedRoom(1);
    ws.push({ type: 'ROOM_MESSAGE', message: msg(1, 30) });
    ws.push({ type: 'ROOM_MESSAGE', message: msg(1, 20) });
    ws.drop();
    timers.advance(timers.delays()[0]);
    last().open();
    expect(last().lastOf('SUBSCRIBE').since).toBe(30);
  });
});

describe('ChatClient sending', () => {
  it('shows a message as pending until ACK, then as the acknowledged message', async () => {
    const ws = await openConnectedRoom(1);
    const cid = client.send(1, 'hello');
    const send = ws.lastOf('SEND');
    expect(send).toMatchObject({ roomId: 1, text: 'hello', clientMsgId: cid });
    expect(client.getRoom(1)!.pending).toMatchObject([{ clientMsgId: cid, status: 'pending', text: 'hello' }]);
    ws.push({ type: 'ACK', ref: send.ref, clientMsgId: cid, id: 'u-1', roomId: 1, seq: 50 });
    expect(client.getRoom(1)!.pending).toEqual([]);
    expect(client.getRoom(1)!.messages).toMatchObject([{ id: 'u-1', seq: 50, text: 'hello', senderId: 'me' }]);
    // the broadcast copy arrives afterwards: still once
    ws.push({ type: 'ROOM_MESSAGE', message: msg(1, 50, 'me', 'hello', { id: 'u-1', clientMsgId: cid }) });
    expect(texts(1)).toEqual(['hello']);
  });

  it('settles a pending message when its broadcast copy arrives before the ACK', async () => {
    const ws = await openConnectedRoom(1);
    const cid = client.send(1, 'yo');
    ws.push({ type: 'ROOM_MESSAGE', message: msg(1, 8, 'me', 'yo', { id: 'u-8', clientMsgId: cid }) });
    expect(client.getRoom(1)!.pending).toEqual([]);
    ws.push({ type: 'ACK', ref: ws.lastOf('SEND').ref, clientMsgId: cid, id: 'u-8', roomId: 1, seq: 8 });
    expect(texts(1)).toEqual(['yo']);
  });

  it('marks a message failed on ERROR and retries with the same clientMsgId', async () => {
    const ws = await openConnectedRoom(1);
    const cid = client.send(1, 'try me');
    ws.push({ type: 'ERROR', code: 'UNAVAILABLE', message: 'kafka is down', ref: ws.lastOf('SEND').ref });
    expect(client.getRoom(1)!.pending).toMatchObject([
      { clientMsgId: cid, status: 'failed', error: { code: 'UNAVAILABLE', message: 'kafka is down' } },
    ]);
    client.retry(cid);
    expect(client.getRoom(1)!.pending[0].status).toBe('pending');
    const sends = ws.framesOf('SEND');
    expect(sends.length).toBe(2);
    expect(sends[1].clientMsgId).toBe(cid);
    expect(sends[1].ref).not.toBe(sends[0].ref);
    ws.push({ type: 'ACK', ref: sends[1].ref, clientMsgId: cid, id: 'u-2', roomId: 1, seq: 2 });
    expect(client.getRoom(1)!.pending).toEqual([]);
    expect(texts(1)).toEqual(['try me']);
  });

  it('marks a message failed when no answer comes in time, and can discard it', async () => {
    const ws = await openConnectedRoom(1);
    const cid = client.send(1, 'lost');
    answerPingsFor(ws, 15000); // the node is alive, only this SEND goes unanswered
    expect(client.getRoom(1)!.pending[0]).toMatchObject({ status: 'failed', error: { code: 'TIMEOUT' } });
    client.discard(cid);
    expect(client.getRoom(1)!.pending).toEqual([]);
    expect(ws.framesOf('SEND').length).toBe(1);
  });

  it('keeps messages sent while disconnected pending and sends them after the room is resumed', async () => {
    const ws1 = await openConnectedRoom(1);
    const cidA = client.send(1, 'in flight'); // sent, then the connection drops before the ACK
    ws1.drop();
    const cidB = client.send(1, 'while offline');
    expect(client.getRoom(1)!.pending.map((p) => p.status)).toEqual(['pending', 'pending']);
    timers.advance(timers.delays()[0]);
    const ws2 = last();
    ws2.open();
    expect(ws2.framesOf('SEND')).toEqual([]); // not before SUBSCRIBED
    const sub = ws2.lastOf('SUBSCRIBE');
    // the first one did reach the server: the replay contains it
    ws2.push({ type: 'ROOM_MESSAGE', message: msg(1, 11, 'me', 'in flight', { id: 'u-a', clientMsgId: cidA }) });
    ws2.push({ type: 'SUBSCRIBED', ref: sub.ref, destination: sub.destination, lastSeq: 11 });
    const sends = ws2.framesOf('SEND');
    expect(sends.map((s) => s.clientMsgId)).toEqual([cidB]);
    ws2.push({ type: 'ACK', ref: sends[0].ref, clientMsgId: cidB, id: 'u-b', roomId: 1, seq: 12 });
    expect(texts(1)).toEqual(['in flight', 'while offline']);
    expect(client.getRoom(1)!.pending).toEqual([]);
  });

  it('resends an unanswered message after reconnecting, with the same clientMsgId', async () => {
    const ws1 = await openConnectedRoom(1);
    const cid = client.send(1, 'again');
    ws1.drop();
    timers.advance(timers.delays()[0]);
    last().open();
    const sub = last().lastOf('SUBSCRIBE');
    last().push({ type: 'SUBSCRIBED', ref: sub.ref, destination: sub.destination, lastSeq: null });
    expect(last().lastOf('SEND').clientMsgId).toBe(cid);
  });

  it('re-enters the room once on NOT_SUBSCRIBED and sends again', async () => {
    const ws = await openConnectedRoom(1);
    const cid = client.send(1, 'x');
    ws.push({ type: 'ERROR', code: 'NOT_SUBSCRIBED', message: 'enter room 1 first', ref: ws.lastOf('SEND').ref });
    expect(client.getRoom(1)!.pending[0].status).toBe('pending');
    const sub = ws.lastOf('SUBSCRIBE');
    ws.push({ type: 'SUBSCRIBED', ref: sub.ref, destination: sub.destination, lastSeq: null });
    expect(ws.framesOf('SEND').map((s) => s.clientMsgId)).toEqual([cid, cid]);
    ws.push({ type: 'ERROR', code: 'NOT_SUBSCRIBED', message: 'still no', ref: ws.lastOf('SEND').ref });
    expect(client.getRoom(1)!.pending[0].status).toBe('failed');
  });

  it('sends a RATE_LIMITED message again once the retryAfterMs of the ERROR has passed', async () => {
    const ws = await openConnectedRoom(1);
    const cid = client.send(1, 'fast');
    ws.push({ type: 'ERROR', code: 'RATE_LIMITED', message: 'too many send frames', ref: ws.lastOf('SEND').ref, retryAfterMs: 300 });
    expect(client.getRoom(1)!.pending[0].status).toBe('pending');
    timers.advance(299);
    expect(ws.framesOf('SEND').length).toBe(1);
    timers.advance(1);
    expect(ws.framesOf('SEND').map((s) => s.clientMsgId)).toEqual([cid, cid]);
    ws.push({ type: 'ACK', ref: ws.lastOf('SEND').ref, clientMsgId: cid, id: 'u-1', roomId: 1, seq: 1 });
    expect(client.getRoom(1)!.pending).toEqual([]);
    expect(texts(1)).toEqual(['fast']);
  });

  it('fails a message refused RATE_LIMITED more often in a row than it retries', async () => {
    const ws = await openConnectedRoom(1);
    client.send(1, 'flood');
    for (let i = 0; i <= MAX_RATE_LIMITED_RETRIES; i++) {
      expect(client.getRoom(1)!.pending[0].status).toBe('pending');
      ws.push({ type: 'ERROR', code: 'RATE_LIMITED', message: 'slow down', ref: ws.lastOf('SEND').ref, retryAfterMs: 1000 });
      timers.advance(1000);
    }
    expect(ws.framesOf('SEND').length).toBe(MAX_RATE_LIMITED_RETRIES + 1);
    expect(client.getRoom(1)!.pending[0]).toMatchObject({ status: 'failed', error: { code: 'RATE_LIMITED' } });
  });

  it('enters a room again after a RATE_LIMITED SUBSCRIBE, once retryAfterMs has passed', async () => {
    client.start();
    last().open();
    await client.openRoom(1);
    const ws = last();
    ws.push({ type: 'ERROR', code: 'RATE_LIMITED', message: 'too many subscribe frames', ref: ws.lastOf('SUBSCRIBE').ref, retryAfterMs: 500 });
    expect(client.getRoom(1)!.error).toMatchObject({ code: 'RATE_LIMITED' });
    timers.advance(499);
    expect(ws.framesOf('SUBSCRIBE').length).toBe(1);
    timers.advance(1);
    const sub = ws.lastOf('SUBSCRIBE');
    expect(ws.framesOf('SUBSCRIBE').length).toBe(2);
    ws.push({ type: 'SUBSCRIBED', ref: sub.ref, destination: sub.destination, lastSeq: null });
    expect(client.getRoom(1)!.error).toBeNull();
  });

  it('rejects empty and over-long text', async () => {
    await openConnectedRoom(1);
    expect(() => client.send(1, '   ')).toThrow();
    expect(() => client.send(1, 'a'.repeat(4001))).toThrow();
    expect(() => client.send(1, '😀'.repeat(4000))).not.toThrow(); // 4000 code points
  });
});
