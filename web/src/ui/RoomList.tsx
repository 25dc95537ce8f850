import { useCallback, useEffect, useRef, useState } from 'react';
import { ApiError, api } from '../api';
import { useI18n } from '../i18n';
import type { ChatClient } from '../protocol/client';
import type { Room } from '../protocol/types';
import { navigate } from '../router';
import {
  addCreated,
  appendPage,
  loadRecent,
  matchesSearch,
  orderedRooms,
  refreshFirstPage,
  rememberRoom,
  saveRecent,
  type RoomPage,
} from '../roomListModel';
import type { Session } from '../session';
import { CreateRoomDialog } from './CreateRoomDialog';
import { unreadBadge } from './indicators';

const POLL_MS = 10000;
const SEARCH_DEBOUNCE_MS = 250;
/** a read position that moved (in this tab or another) refreshes the counts this soon */
const READ_REFRESH_MS = 150;

/** The client keeps the read positions the list carries: a room opened later places its divider there. */
function learnPositions(client: ChatClient, page: RoomPage): void {
  for (const r of page.rooms) if (typeof r.lastReadSeq === 'number') client.learnReadPosition(r.id, r.lastReadSeq);
}

export function RoomList({ client, session, activeRoomId }: { client: ChatClient; session: Session; activeRoomId: number | null }) {
  const { t } = useI18n();
  const [query, setQuery] = useState('');
  const [search, setSearch] = useState('');
  const [paged, setPaged] = useState<RoomPage | null>(null);
  const [loadingMore, setLoadingMore] = useState(false);
  const [recentIds, setRecentIds] = useState<number[]>(() => loadRecent(session.userId));
  const [known, setKnown] = useState<ReadonlyMap<number, Room>>(() => new Map());
  const [error, setError] = useState<string | null>(null);
  const [announce, setAnnounce] = useState('');
  const [dialogOpen, setDialogOpen] = useState(false);
  const newButton = useRef<HTMLButtonElement>(null);
  const sentinel = useRef<HTMLLIElement>(null);
  const tRef = useRef(t);
  tRef.current = t;
  // answers to an older search are dropped
  const searchRef = useRef(search);
  searchRef.current = search;
  // the search the held pages answer: a new search's first page replaces them
  const pagedFor = useRef<string | null>(null);

  const refresh = useCallback(async () => {
    const forSearch = searchRef.current;
    try {
      const page = await api.rooms({ q: forSearch });
      learnPositions(client, page);
      if (forSearch !== searchRef.current) return;
      const sameSearch = pagedFor.current === forSearch;
      pagedFor.current = forSearch;
      setPaged((prev) => (sameSearch ? refreshFirstPage(prev, page) : page));
      setError(null);
    } catch (e) {
      if (forSearch === searchRef.current) setError((e as Error).message);
    }
  }, [client]);

  const loadMore = useCallback(async () => {
    if (!paged?.hasMore || loadingMore || pagedFor.current !== search) return;
    const forSearch = search;
    setLoadingMore(true);
    try {
      const page = await api.rooms({ q: forSearch, cursor: paged.nextCursor });
      learnPositions(client, page);
      if (forSearch === searchRef.current) setPaged((prev) => (prev ? appendPage(prev, page) : page));
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setLoadingMore(false);
    }
  }, [client, paged, loadingMore, search]);

  // a new search starts from its first page
  useEffect(() => {
    const id = setTimeout(() => setSearch(query.trim()), SEARCH_DEBOUNCE_MS);
    return () => clearTimeout(id);
  }, [query]);
  useEffect(() => {
    void refresh();
  }, [search, refresh]);

  // more rooms when the end of the list scrolls into view
  useEffect(() => {
    const el = sentinel.current;
    if (!el || typeof IntersectionObserver === 'undefined') return;
    const io = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) void loadMore();
    });
    io.observe(el);
    return () => io.disconnect();
  }, [loadMore]);

  // the rooms entered come first
  useEffect(() => {
    if (activeRoomId === null) return;
    setRecentIds((prev) => {
      const next = rememberRoom(prev, activeRoomId);
      saveRecent(session.userId, next);
      return next;
    });
  }, [activeRoomId, session.userId]);
  useEffect(() => {
    const missing = recentIds.filter((id) => !known.has(id));
    if (missing.length === 0) return;
    const ctl = new AbortController();
    for (const id of missing) {
      api.room(id, ctl.signal).then(
        (room) => setKnown((prev) => new Map(prev).set(room.id, room)),
        (e) => {
          if (e instanceof ApiError && e.status === 404) setRecentIds((prev) => prev.filter((x) => x !== id));
        },
      );
    }
    return () => ctl.abort();
  }, [recentIds, known]);

  useEffect(() => {
    client.watchRooms();
    const offCreated = client.on('roomCreated', (room) => {
      setPaged((prev) => addCreated(prev, room, searchRef.current));
      setAnnounce(tRef.current('newRoomAnnounce', { name: room.name }));
    });
    // after a reconnect, rooms created meanwhile are fetched
    const offConnected = client.on('connected', () => void refresh());
    // someone entered or left an open room: its count changed (debounced)
    let soon: ReturnType<typeof setTimeout> | undefined;
    const offMessage = client.on('message', (m) => {
      if (m.kind === 'chat') return;
      clearTimeout(soon);
      soon = setTimeout(() => void refresh(), 500);
    });
    // a tab or device of ours read a room: its badge goes
    let readSoon: ReturnType<typeof setTimeout> | undefined;
    const offRead = client.on('readPosition', () => {
      clearTimeout(readSoon);
      readSoon = setTimeout(() => void refresh(), READ_REFRESH_MS);
    });
    const id = setInterval(() => void refresh(), POLL_MS);
    return () => {
      offCreated();
      offConnected();
      offMessage();
      offRead();
      clearTimeout(soon);
      clearTimeout(readSoon);
      clearInterval(id);
      client.unwatchRooms();
    };
  }, [client, refresh]);

  // until a new search's first page arrives, the rows held are narrowed here
  const rooms = paged === null ? null : orderedRooms(recentIds, known, paged.rooms.filter((r) => matchesSearch(r, search)), search);
  return (
    <div className="rooms">
      <div className="rooms-head">
        <h2 id="rooms-heading">{t('rooms')}</h2>
        <button
          type="button"
          ref={newButton}
          className="btn btn-primary"
          onClick={() => setDialogOpen(true)}
          data-testid="new-room"
        >
          + {t('newRoom')}
        </button>
      </div>
      <input
        type="search"
        className="room-search"
        value={query}
        onChange={(e) => setQuery(e.target.value)}
        placeholder={t('searchRooms')}
        aria-label={t('searchRooms')}
        maxLength={100}
        data-testid="room-search"
      />
      {error && (
        <p className="field-error" role="alert">
          {t('roomsLoadError', { reason: error })}
        </p>
      )}
      {rooms === null && !error && <p className="muted">{t('loading')}</p>}
      {rooms !== null && rooms.length === 0 && <p className="muted">{search ? t('noRoomsFound', { q: search }) : t('noRooms')}</p>}
      {rooms !== null && rooms.length > 0 && (
        <ul className="room-list" aria-labelledby="rooms-heading" data-testid="room-list" data-has-more={paged?.hasMore ? 'true' : 'false'} data-search={pagedFor.current ?? ''}>
          {rooms.map((r) => {
            const badge = r.id === activeRoomId ? null : unreadBadge(t, r.unread);
            return (
              <li key={r.id}>
                <a
                  href={`/room/${r.id}`}
                  className={`room-item${r.id === activeRoomId ? ' active' : ''}`}
                  aria-current={r.id === activeRoomId ? 'page' : undefined}
                  data-room-id={r.id}
                  data-testid="room-item"
                  onClick={(e) => {
                    if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
                    e.preventDefault();
                    navigate(`/room/${r.id}`);
                  }}
                >
                  <span className="room-name-row">
                    <span className="room-name">{r.name}</span>
                    {badge && (
                      <span className="unread-badge" data-testid="unread-badge" data-unread={r.unread}>
                        <span aria-hidden="true">{badge.text}</span>
                        <span className="sr-only">{badge.label}</span>
                      </span>
                    )}
                  </span>
                  <span className="room-meta">
                    <span className={`room-count${r.memberCount > 0 ? '' : ' zero'}`} aria-label={t('peopleLabel', { n: r.memberCount })} data-testid="room-count">
                      <span aria-hidden="true">● </span>
                      {t('people', { n: r.memberCount })}
                    </span>
                    <span className="room-by">{t('createdBy', { user: r.createdBy })}</span>
                  </span>
                </a>
              </li>
            );
          })}
          {paged?.hasMore && (
            <li ref={sentinel} className="room-more">
              <button type="button" className="btn btn-ghost" onClick={() => void loadMore()} disabled={loadingMore} data-testid="more-rooms">
                {loadingMore ? t('loadingRooms') : t('loadMoreRooms')}
              </button>
            </li>
          )}
        </ul>
      )}
      <div className="sr-only" aria-live="polite">
        {announce}
      </div>
      {dialogOpen && (
        <CreateRoomDialog
          token={session.token}
          onClose={() => {
            setDialogOpen(false);
            newButton.current?.focus();
          }}
          onCreated={(room) => {
            setPaged((prev) => addCreated(prev, room, searchRef.current));
            setDialogOpen(false);
            navigate(`/room/${room.id}`);
          }}
        />
      )}
    </div>
  );
}
