import { describe, expect, it } from 'vitest';
import type { Room } from '../src/protocol/types';
import { addCreated, appendPage, matchesSearch, orderedRooms, refreshFirstPage, rememberRoom, type RoomPage } from '../src/roomListModel';

const room = (id: number, name = `room ${id}`, memberCount = 0): Room => ({ id, name, createdBy: 'x', createdAt: '', memberCount });
const page = (ids: number[], hasMore: boolean): RoomPage => ({
  rooms: ids.map((id) => room(id)),
  nextCursor: hasMore ? String(ids[ids.length - 1]) : null,
  hasMore,
});
const ids = (p: RoomPage | null | Room[]) => (Array.isArray(p) ? p : p?.rooms ?? []).map((r) => r.id);

describe('room list pages', () => {
  it('appends the next page without repeating a room that moved down a page', () => {
    const next = appendPage(page([9, 8, 7], true), page([7, 6, 5], true));
    expect(ids(next)).toEqual([9, 8, 7, 6, 5]);
    expect(next.nextCursor).toBe('5');
  });

  it('a refreshed first page replaces what it covers and keeps older pages and their cursor', () => {
    const held = appendPage(page([9, 8], true), page([7, 6], true));
    const fresh = { ...page([10, 9], true), rooms: [room(10), room(9, 'room 9', 4)] };
    const next = refreshFirstPage(held, fresh);
    expect(ids(next)).toEqual([10, 9, 8, 7, 6]);
    expect(next.rooms[1].memberCount).toBe(4);
    expect(next.nextCursor).toBe('6');
    expect(refreshFirstPage(held, page([10, 9, 8, 7, 6, 5], false)).hasMore).toBe(false);
  });

  it('a room created live goes first, only when it matches the search', () => {
    const held = page([5, 4], false);
    expect(ids(addCreated(held, room(6, 'General'), ''))).toEqual([6, 5, 4]);
    expect(ids(addCreated(held, room(6, 'General'), 'gen'))).toEqual([6, 5, 4]);
    expect(ids(addCreated(held, room(6, 'random'), 'gen'))).toEqual([5, 4]);
    expect(addCreated(null, room(6), '')).toBeNull();
  });

  it('searches like the server: case-insensitive substring, ends trimmed', () => {
    expect(matchesSearch(room(1, 'Team CHAT 2'), ' chat ')).toBe(true);
    expect(matchesSearch(room(1, 'Team'), 'chat')).toBe(false);
    expect(matchesSearch(room(1, 'x'), '')).toBe(true);
  });
});

describe('rooms entered come first', () => {
  it('orders the entered rooms first, most recent first, then the newest, each once', () => {
    const known = new Map([[2, room(2)], [30, room(30, 'old one')]]);
    const shown = orderedRooms([30, 7, 2], known, [room(9), room(8), room(7)], '');
    expect(ids(shown)).toEqual([30, 7, 2, 9, 8]);
  });

  it('applies the search to the entered rooms too, and skips rooms it does not know', () => {
    const known = new Map([[2, room(2, 'alpha')], [3, room(3, 'beta')]]);
    expect(ids(orderedRooms([3, 2, 99], known, [], 'alp'))).toEqual([2]);
  });

  it('remembers the entered room first, at most 10', () => {
    let recent: number[] = [];
    for (const id of [1, 2, 3, 2]) recent = rememberRoom(recent, id);
    expect(recent).toEqual([2, 3, 1]);
    for (let id = 10; id < 30; id++) recent = rememberRoom(recent, id);
    expect(recent.length).toBe(10);
    expect(recent[0]).toBe(29);
  });
});
