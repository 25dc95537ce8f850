import { beforeEach, describe, expect, it } from 'vitest';
import { Connection, type AuthVerdict, type ConnectionHost, type ConnectionOptions } from '../src/protocol/connection';
import { FakeSocket, FakeTimers, flush } from './fakes';

let timers: FakeTimers;
let sockets: FakeSocket[];
let events: string[];
let frames: unknown[];
let conn: Connection;

function makeConnection(extra: Partial<ConnectionOptions> = {}): Connection {
  const host: ConnectionHost = {
    opened: (reconnect) => events.push(reconnect ? 'reopened' : 'opened'),
    frame: (data) => frames.push(data),
    disconnected: () => events.push('disconnected'),
    ping: () => {
      events.push('ping');
      conn.send({ type: 'PING', ref: 'hb' });
    },
    authExpired: () => events.push('authExpired'),
    changed: () => undefined,
  };
  return new Connection(
    host,
    {
      url: () => 'ws://test/ws',
      wsFactory: (url) => {
        const s = new FakeSocket(url);
        sockets.push(s);
        return s;
      },
      checkAuth: null,
      backoff: { baseMs: 500, maxMs: 8000, random: () => 1 },
      pingIntervalMs: 5000,
      pongTimeoutMs: 4000,
      openTimeoutMs: 3000,
      offlineAfterAttempts: 4,
      ...extra,
    },
    timers,
  );
}

const last = (): FakeSocket => sockets[sockets.length - 1];

/** The socket opens; like a node, it says session-info first (the connection hands it on). */
function openLast(): void {
  last().readyState = 1;
  last().onopen?.({});
  conn.sessionStarted('node-1', 's-1');
}

beforeEach(() => {
  timers = new FakeTimers();
  sockets = [];
  events = [];
  frames = [];
  conn = makeConnection();
});

describe('Connection', () => {
  it('is ready only between open and drop, and hands on the frames of the current socket only', () => {
    conn.start();
    expect(conn.snapshot.status).toBe('connecting');
    expect(conn.ready).toBe(false);
    expect(conn.send({ type: 'PING' })).toBe(false);
    openLast();
    expect(conn.ready).toBe(true);
    expect(conn.snapshot).toMatchObject({ status: 'connected', nodeId: 'node-1', sessionId: 's-1' });
    expect(conn.send({ type: 'PING', ref: 'x' })).toBe(true);
    expect(last().lastOf('PING').ref).toBe('x');
    last().push({ type: 'PONG', ref: 'x' });
    expect(frames).toEqual([JSON.stringify({ type: 'PONG', ref: 'x' })]);

    const old = last();
    const genBefore = conn.gen;
    old.drop(1006);
    expect(conn.gen).not.toBe(genBefore);
    expect(conn.ready).toBe(false);
    expect(events).toEqual(['opened', 'disconnected']);
    old.push({ type: 'PONG', ref: 'late' }); // a stale socket's frame is not handed on
    expect(frames.length).toBe(1);
    expect(conn.snapshot).toMatchObject({ status: 'reconnecting', nodeId: null, sessionId: null, attempts: 1 });
  });

  it('reconnects after the backoff, tells the host it is a reconnect, and starts the backoff over after session-info', () => {
    conn.start();
    openLast();
    last().drop();
    expect(timers.delays()).toEqual([500]); // equal jitter with random() = 1: the full base
    timers.advance(500);
    expect(sockets.length).toBe(2);
    last().drop(); // failed before opening
    expect(timers.delays()).toEqual([1000]);
    timers.advance(1000);
    openLast();
    expect(events.filter((e) => e.endsWith('opened'))).toEqual(['opened', 'reopened']);
    last().drop();
    expect(timers.delays()).toEqual([500]);
  });

  it('pings after the silence, is kept alive by any frame, and drops a socket whose PONG does not come', () => {
    conn.start();
    openLast();
    timers.advance(4999);
    expect(events).not.toContain('ping');
    last().push({ type: 'ROOM_MESSAGE' }); // a frame restarts the wait
    timers.advance(4999);
    expect(last().framesOf('PING').length).toBe(0);
    timers.advance(1);
    expect(last().framesOf('PING').length).toBe(1);
    last().push({ type: 'PONG', ref: 'hb' });
    timers.advance(5000);
    expect(last().framesOf('PING').length).toBe(2);
    timers.advance(3999);
    expect(conn.ready).toBe(true);
    timers.advance(1); // no answer within the PONG timeout
    expect(sockets[0].closedByClient).toEqual({ code: 4000, reason: 'heartbeat timeout' });
    expect(events.at(-1)).toBe('disconnected');
    expect(conn.snapshot.status).toBe('reconnecting');
    timers.advance(500);
    expect(sockets.length).toBe(2);
  });

  it('stop() closes with 1000, says disconnected and does not reconnect', () => {
    conn.start();
    openLast();
    const ws = last();
    conn.stop();
    expect(ws.closedByClient).toEqual({ code: 1000, reason: 'bye' });
    expect(events).toEqual(['opened', 'disconnected']);
    expect(conn.snapshot).toMatchObject({ status: 'closed', nextAttemptAt: null });
    expect(timers.count).toBe(0);
    conn.reconnectNow();
    expect(sockets.length).toBe(1);
  });

  it('stops and reports an expired token on close 4001', () => {
    conn.start();
    openLast();
    last().drop(4001);
    expect(events).toContain('authExpired');
    expect(conn.snapshot.status).toBe('closed');
    expect(timers.count).toBe(0);
  });

  it('asks the auth check after two failed connects and stops when it says refused', async () => {
    const verdicts: AuthVerdict[] = ['unknown', 'refused'];
    let asked = 0;
    conn = makeConnection({
      checkAuth: async () => verdicts[asked++],
    });
    conn.start();
    last().drop();
    expect(asked).toBe(0);
    timers.advance(timers.delays()[0]);
    last().drop();
    await flush();
    expect(asked).toBe(1);
    expect(conn.snapshot.status).toBe('reconnecting'); // 'unknown': attempts go on
    timers.advance(timers.delays()[0]);
    last().drop();
    await flush();
    expect(asked).toBe(2);
    expect(events).toContain('authExpired');
    expect(conn.snapshot.status).toBe('closed');
  });

  it('goes offline with the browser and tries at once when it is back', () => {
    conn.start();
    openLast();
    last().drop();
    conn.setNetworkOnline(false);
    expect(conn.snapshot.status).toBe('offline');
    conn.setNetworkOnline(true);
    expect(sockets.length).toBe(2);
    expect(timers.delays()).toEqual([3000]); // the backoff wait was skipped; only the open timeout runs
  });
});
