/** The room list's pure logic: pages newest first (GET /api/room), rooms entered first. */
import type { Room } from './protocol/types';

export interface RoomPage {
  rooms: Room[];
  nextCursor: string | null;
  hasMore: boolean;
}

/** how many entered rooms the list remembers and shows first */
export const RECENT_MAX = 10;

/** The name search as the server does it: case-insensitive substring, ends trimmed. */
export function matchesSearch(room: Room, query: string): boolean {
  const q = query.trim().toLowerCase();
  return q === '' || room.name.toLowerCase().includes(q);
}

/** The next page, after the rows held (a room may move a page when rooms are created meanwhile). */
export function appendPage(held: RoomPage, page: RoomPage): RoomPage {
  const seen = new Set(held.rooms.map((r) => r.id));
  return { rooms: [...held.rooms, ...page.rooms.filter((r) => !seen.has(r.id))], nextCursor: page.nextCursor, hasMore: page.hasMore };
}

/** A fresh first page (poll, reconnect): it replaces the rows it covers; older rows loaded by
 * scrolling stay, with the cursor that follows them. */
export function refreshFirstPage(held: RoomPage | null, page: RoomPage): RoomPage {
  if (!held || !page.hasMore || page.rooms.length === 0) return page;
  const boundary = page.rooms[page.rooms.length - 1].id;
  const older = held.rooms.filter((r) => r.id < boundary);
  if (older.length === 0) return page;
  return { rooms: [...page.rooms, ...older], nextCursor: held.nextCursor, hasMore: held.hasMore };
}

/** A room created live (ROOM_CREATED, or by us): newest, so first, when it matches the search. */
export function addCreated(held: RoomPage | null, room: Room, query: string): RoomPage | null {
  if (!held || !matchesSearch(room, query) || held.rooms.some((r) => r.id === room.id)) return held;
  return { ...held, rooms: [room, ...held.rooms] };
}

/** The rooms to show: the entered ones first (most recent first), then the pages, each room once. */
export function orderedRooms(recentIds: readonly number[], known: ReadonlyMap<number, Room>, paged: readonly Room[], query: string): Room[] {
  const byId = new Map(paged.map((r) => [r.id, r]));
  const recent = recentIds
    .map((id) => byId.get(id) ?? known.get(id))
    .filter((r): r is Room => r !== undefined && matchesSearch(r, query));
  const first = new Set(recent.map((r) => r.id));
  return [...recent, ...paged.filter((r) => !first.has(r.id))];
}

/** The entered room moves to the front of the remembered ids. */
export function rememberRoom(ids: readonly number[], roomId: number, max = RECENT_MAX): number[] {
  return [roomId, ...ids.filter((id) => id !== roomId)].slice(0, max);
}

const recentKey = (userId: string) => `chattrio.recentRooms.${userId}`;

export function loadRecent(userId: string): number[] {
  try {
    const v: unknown = JSON.parse(localStorage.getItem(recentKey(userId)) ?? '[]');
    return Array.isArray(v) ? v.filter((id): id is number => Number.isSafeInteger(id) && id > 0).slice(0, RECENT_MAX) : [];
  } catch {
    return [];
  }
}

export function saveRecent(userId: string, ids: readonly number[]): void {
  try {
    localStorage.setItem(recentKey(userId), JSON.stringify(ids));
  } catch {
    /* storage may be unavailable: the order is then this tab's only */
  }
}
