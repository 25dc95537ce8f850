/** REST calls (docs/protocol.md). Every answer is {success, message, data}. */
import type { ChatMessage, Room } from './protocol/types';
import type { RoomPage } from './roomListModel';

const ROOMS_PAGE = 50;

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

interface Envelope<T> {
  success: boolean;
  message: string;
  data: T;
}

async function call<T>(method: string, path: string, opts: { body?: unknown; token?: string; signal?: AbortSignal } = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      credentials: 'same-origin',
      signal: opts.signal,
    });
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    throw new ApiError(0, 'network error');
  }
  let env: Envelope<T> | null;
  try {
    env = (await res.json()) as Envelope<T>;
  } catch {
    env = null;
  }
  if (!res.ok || !env || env.success === false) {
    const msg = env && typeof env.message === 'string' && env.message ? env.message : `HTTP ${res.status}`;
    throw new ApiError(res.status, msg);
  }
  return env.data;
}

export interface EnterResult {
  userId: string;
  token: string;
  expiresAt: number | string;
  created: boolean;
}

export type AuthMode = 'open' | 'jwt';

export interface WebSessionResult {
  userId: string;
  expiresAt: number;
}

export const api = {
  authMode: () => call<{ mode: AuthMode }>('GET', '/api/auth'),
  enter: (userId: string) => call<EnterResult>('POST', `/api/user/enter/${encodeURIComponent(userId)}`),
  /** jwt mode: trade the identity service's token for the HttpOnly cookie the WebSocket carries */
  startSession: (token: string) => call<WebSessionResult>('POST', '/api/auth/session', { token }),
  endSession: () => call<null>('DELETE', '/api/auth/session'),
  /** the cookie's user: 401 when the server no longer takes the token */
  me: () => call<WebSessionResult>('GET', '/api/me'),
  /** a page of rooms, newest first; `cursor` is the previous page's nextCursor, `q` a name search */
  rooms: (opts: { cursor?: string | null; q?: string; limit?: number; signal?: AbortSignal } = {}) => {
    const q = new URLSearchParams({ limit: String(opts.limit ?? ROOMS_PAGE) });
    if (opts.cursor) q.set('cursor', opts.cursor);
    if (opts.q?.trim()) q.set('q', opts.q.trim());
    return call<RoomPage>('GET', `/api/room?${q}`, { signal: opts.signal });
  },
  room: (roomId: number, signal?: AbortSignal) => call<Room>('GET', `/api/room/${roomId}`, { signal }),
  createRoom: (name: string, token: string) => call<Room>('POST', '/api/room', { body: { name }, token }),
  members: (roomId: number, signal?: AbortSignal) =>
    call<{ roomId: number; members: string[] }>('GET', `/api/room/${roomId}/members`, { signal }),
  messages: (roomId: number, before: number | null, limit: number) => {
    const q = new URLSearchParams({ limit: String(limit) });
    if (before !== null) q.set('before', String(before));
    return call<ChatMessage[]>('GET', `/api/room/${roomId}/messages?${q}`);
  },
};
