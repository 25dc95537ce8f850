import { useCallback, useSyncExternalStore } from 'react';
import type { ChatClient, ClientSnapshot, RoomView } from './protocol/client';

export function useClientSnapshot(client: ChatClient): ClientSnapshot {
  const sub = useCallback((l: () => void) => client.subscribe(l), [client]);
  return useSyncExternalStore(sub, client.getSnapshot);
}

export function useRoomView(client: ChatClient, roomId: number): RoomView | undefined {
  const sub = useCallback((l: () => void) => client.subscribe(l), [client]);
  const get = useCallback(() => client.getRoom(roomId), [client, roomId]);
  return useSyncExternalStore(sub, get);
}
