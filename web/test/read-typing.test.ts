import { beforeEach, describe, expect, it } from 'vitest';
import { translate, type MessageKey } from '../src/i18n';
import { ChatClient } from '../src/protocol/client';
import { ReadPositions } from '../src/protocol/readPositions';
import { TypingThrottle, TypingUsers } from '../src/protocol/typing';
import { firstUnread, typingText, unreadBadge } from '../src/ui/indicators';
import { FakeHistory, FakeSocket, FakeTimers, msg } from './fakes';

describe('ReadPositions', () => {
  it('reports at once, then at most once per second per room with the newest seq', () => {
    const timers = new FakeTimers();
    const sent: [number, number][] = [];
    const reads = new ReadPositions(timers, (room, seq) => sent.push([room, seq]) > 0);
    reads.report(1, 10);
    expect(sent).toEqual([[1, 10]]);
    reads.report(1, 11);
    reads.report(1, 12);
    reads.report(2, 5);
    expect(sent).toEqual([
      [1, 10],
      [2, 5],
    ]);
    timers.advance(999);
    expect(sent.length).toBe(2);
    timers.advance(1);
    expect(sent).toEqual([
      [1, 10],
      [2, 5],
      [1, 12],
    ]);
    expect(reads.position(1)).toBe(12);
  });

  it('never reports what is known read already, and learns positions only forward', () => {
    const timers = new FakeTimers();
    const sent: number[] = [];
    const reads = new ReadPositions(timers, (_room, seq) => sent.push(seq) > 0);
    expect(reads.learn(1, 20)).toBe(true);
    expect(reads.learn(1, 15)).toBe(false);
    reads.report(1, 20);
    reads.report(1, 18);
    expect(sent).toEqual([]);
    expect(reads.position(1)).toBe(20);
    expect(reads.position(2)).toBeNull();
  });

  it('drops a held-back report when the room closes, and retries after a failed send', () => {
    const timers = new FakeTimers();
    let connected = false;
    const sent: number[] = [];
    const reads = new ReadPositions(timers, (_room, seq) => connected && sent.push(seq) > 0);
    reads.report(1, 3);
    expect(sent).toEqual([]);
    connected = true;
    reads.report(1, 3);
    expect(sent).toEqual([3]);
    reads.report(1, 4);
    reads.forget(1);
    timers.advance(5000);
    expect(sent).toEqual([3]);
  });
});

describe('typing', () => {
  it('shows a user for 5 s after their last TYPING, and not after their message', () => {
    const timers = new FakeTimers();
    const changes: number[] = [];
    const typing = new TypingUsers(timers, (room) => changes.push(room));
    typing.typing(1, 'alice');
    typing.typing(1, 'bob');
    expect(typing.users(1)).toEqual(['alice', 'bob']);
    timers.advance(4000);
    typing.typing(1, 'alice');
    timers.advance(1000);
    expect(typing.users(1)).toEqual(['alice']);
    typing.stopped(1, 'alice');
    expect(typing.users(1)).toEqual([]);
    expect(changes).toEqual([1, 1, 1, 1]);
  });

  it('sends at most one TYPING per room every 3.2 s', () => {
    const timers = new FakeTimers();
    const throttle = new TypingThrottle(timers);
    expect(throttle.take(1)).toBe(true);
    expect(throttle.take(1)).toBe(false);
    expect(throttle.take(2)).toBe(true);
    timers.advance(3199);
    expect(throttle.take(1)).toBe(false);
    timers.advance(1);
    expect(throttle.take(1)).toBe(true);
  });
});

describe('indicators', () => {
  const t = (key: MessageKey, params?: Record<string, string | number>) => translate('en', key, params);
  it('caps the badge at 99+ and says it in words', () => {
    expect(unreadBadge(t, 0)).toBeNull();
    expect(unreadBadge(t, undefined)).toBeNull();
    expect(unreadBadge(t, 1)).toEqual({ text: '1', label: '1 unread message' });
    expect(unreadBadge(t, 99)).toEqual({ text: '99', label: '99 unread messages' });
    expect(unreadBadge(t, 100)).toEqual({ text: '99+', label: 'More than 99 unread messages' });
  });

  it('names one typist, or the first and how many others, in both languages', () => {
    expect(typingText(t, [])).toBe('');
    expect(typingText(t, ['alice'])).toBe('alice is typing…');
    expect(typingText(t, ['alice', 'bob'])).toBe('alice and 1 other are typing…');
    expect(typingText(t, ['alice', 'bob', 'cat'])).toBe('alice and 2 others are typing…');
    const ko = (key: MessageKey, params?: Record<string, string | number>) => translate('ko', key, params);
    expect(typingText(ko, ['alice', 'bob', 'cat'])).toBe('alice님 외 2명이 입력 중…');
  });

  it('puts the divider before the first chat message of another user after the position', () => {
    const messages = [msg(1, 1), msg(1, 2, 'me'), msg(1, 3, 'bob', '', { kind: 'join' }), msg(1, 4), msg(1, 5)];
    expect(firstUnread(messages, 1, 'me')?.seq).toBe(4);
    expect(firstUnread(messages, 5, 'me')).toBeNull();
    expect(firstUnread(messages, null, 'me')).toBeNull();
  });
});

describe('ChatClient read positions and typing', () => {
  let timers: FakeTimers;
  let sockets: FakeSocket[];
  let client: ChatClient;

  beforeEach(() => {
    timers = new FakeTimers();
    sockets = [];
    const history = new FakeHistory();
    history.add(msg(7, 1), msg(7, 2));
    client = new ChatClient({
      userId: 'me',
      url: () => 'ws://test/ws',
      wsFactory: (url) => {
        const s = new FakeSocket(url);
        sockets.push(s);
        return s;
      },
      history,
      timers,
    });
  });

  async function live(): Promise<FakeSocket> {
    client.start();
    const ws = sockets[0];
    ws.open();
    await client.openRoom(7);
    const sub = ws.lastOf('SUBSCRIBE');
    ws.push({ type: 'SUBSCRIBED', ref: sub.ref, destination: sub.destination, lastSeq: 2 });
    return ws;
  }

  it('sends READ for a live room and learns READ_POSITION from another tab', async () => {
    const ws = await live();
    const moves: number[] = [];
    client.on('readPosition', ({ lastReadSeq }) => moves.push(lastReadSeq));
    client.markRead(7, 2);
    expect(ws.lastOf('READ')).toEqual({ type: 'READ', roomId: 7, seq: 2 });
    ws.push({ type: 'READ_POSITION', roomId: 7, lastReadSeq: 9 });
    expect(client.readPosition(7)).toBe(9);
    expect(moves).toEqual([9]);
    client.markRead(8, 1); // not open: nothing goes out
    expect(ws.framesOf('READ').length).toBe(1);
  });

  it('sends TYPING at most every 3.2 s and shows others typing until their message', async () => {
    const ws = await live();
    client.typing(7);
    client.typing(7);
    expect(ws.framesOf('TYPING')).toEqual([{ type: 'TYPING', roomId: 7 }]);
    ws.push({ type: 'TYPING', roomId: 7, userId: 'bob' });
    ws.push({ type: 'TYPING', roomId: 7, userId: 'me' });
    expect(client.getRoom(7)!.typing).toEqual(['bob']);
    ws.push({ type: 'ROOM_MESSAGE', message: msg(7, 3, 'bob') });
    expect(client.getRoom(7)!.typing).toEqual([]);
    ws.push({ type: 'TYPING', roomId: 7, userId: 'cat' });
    timers.advance(5000);
    expect(client.getRoom(7)!.typing).toEqual([]);
  });
});
