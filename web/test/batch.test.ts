import { expect, it } from 'vitest';
import { ChatClient } from '../src/protocol/client';
import { FakeHistory, FakeSocket, FakeTimers, msg } from './fakes';

/** A MESSAGES frame (docs/protocol.md, "Batched messages") means the ROOM_MESSAGE frames it replaces. */
it('takes every message of a MESSAGES frame, in order, as if each came alone', async () => {
  const sockets: FakeSocket[] = [];
  const client = new ChatClient({
    userId: 'me',
    url: () => 'ws://test/ws?batch=1',
    wsFactory: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    history: new FakeHistory(),
    timers: new FakeTimers(),
  });
  client.start();
  const ws = sockets[0];
  ws.open();
  await client.openRoom(1);
  const sub = ws.lastOf('SUBSCRIBE');
  ws.push({ type: 'SUBSCRIBED', ref: sub.ref, destination: sub.destination, lastSeq: null });
  const got: number[] = [];
  client.on('message', (m) => got.push(m.seq));
  ws.push({ type: 'MESSAGES', roomId: 1, messages: [msg(1, 10), msg(1, 12), msg(1, 15)] });
  ws.push({ type: 'ROOM_MESSAGE', message: msg(1, 17) });
  ws.push({ type: 'MESSAGES', roomId: 1, messages: [msg(1, 17), msg(1, 20)] }); // 17 again: not twice
  expect(client.getRoom(1)!.messages.map((m) => m.seq)).toEqual([10, 12, 15, 17, 20]);
  expect(got).toEqual([10, 12, 15, 17, 20]);
});
