/** The login session, kept in sessionStorage for the tab's lifetime. */
export interface Session {
  userId: string;
  token: string;
  /** unix seconds, or null when unknown */
  expiresAt: number | null;
}

const KEY = 'chattrio.session';

function toSeconds(v: unknown): number | null {
  if (typeof v === 'number' && Number.isFinite(v)) return v > 1e12 ? Math.floor(v / 1000) : v;
  if (typeof v === 'string') {
    const n = Number(v);
    if (Number.isFinite(n)) return toSeconds(n);
    const d = Date.parse(v);
    if (!Number.isNaN(d)) return Math.floor(d / 1000);
  }
  return null;
}

export function makeSession(userId: string, token: string, expiresAt: unknown): Session {
  return { userId, token, expiresAt: toSeconds(expiresAt) };
}

export function loadSession(): Session | null {
  try {
    const raw = sessionStorage.getItem(KEY);
    if (!raw) return null;
    const s = JSON.parse(raw) as Session;
    if (!s || typeof s.token !== 'string' || typeof s.userId !== 'string') return null;
    if (s.expiresAt !== null && s.expiresAt * 1000 <= Date.now()) {
      sessionStorage.removeItem(KEY);
      return null;
    }
    return s;
  } catch {
    return null;
  }
}

export function saveSession(s: Session): void {
  sessionStorage.setItem(KEY, JSON.stringify(s));
}

export function clearSession(): void {
  sessionStorage.removeItem(KEY);
}
