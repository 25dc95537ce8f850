import { useCallback, useEffect, useRef, useState } from 'react';
import { api } from '../api';
import { useI18n } from '../i18n';
import type { ChatClient } from '../protocol/client';
import type { Room } from '../protocol/types';
import { navigate } from '../router';
import type { Session } from '../session';
import { CreateRoomDialog } from './CreateRoomDialog';

const POLL_MS = 10000;

function mergeRooms(prev: Room[], incoming: Room[]): Room[] {
  const byId = new Map(prev.map((r) => [r.id, r]));
  for (const r of incoming) byId.set(r.id, r);
  return [...byId.values()].sort((a, b) => a.id - b.id);
}

export function RoomList({ client, session, activeRoomId }: { client: ChatClient; session: Session; activeRoomId: number | null }) {
  const { t } = useI18n();
  const [rooms, setRooms] = useState<Room[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [announce, setAnnounce] = useState('');
  const [dialogOpen, setDialogOpen] = useState(false);
  const newButton = useRef<HTMLButtonElement>(null);
  const tRef = useRef(t);
  tRef.current = t;

  const refresh = useCallback(async () => {
    try {
      const list = await api.rooms();
      // the full list is authoritative for counts; rooms that arrived live are kept too
      setRooms((prev) => mergeRooms(prev ?? [], list));
      setError(null);
    } catch (e) {
      setError((e as Error).message);
    }
  }, []);

  useEffect(() => {
    client.watchRooms();
    const offCreated = client.on('roomCreated', (room) => {
      setRooms((prev) => {
        if (prev?.some((r) => r.id === room.id)) return prev;
        return mergeRooms(prev ?? [], [room]);
      });
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
    void refresh();
    const id = setInterval(() => void refresh(), POLL_MS);
    return () => {
      offCreated();
      offConnected();
      offMessage();
      clearTimeout(soon);
      clearInterval(id);
      client.unwatchRooms();
    };
  }, [client, refresh]);

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
      {error && (
        <p className="field-error" role="alert">
          {t('roomsLoadError', { reason: error })}
        </p>
      )}
      {rooms === null && !error && <p className="muted">{t('loading')}</p>}
      {rooms !== null && rooms.length === 0 && <p className="muted">{t('noRooms')}</p>}
      {rooms !== null && rooms.length > 0 && (
        <ul className="room-list" aria-labelledby="rooms-heading" data-testid="room-list">
          {rooms.map((r) => (
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
                <span className="room-name">{r.name}</span>
                <span className="room-meta">
                  <span className={`room-count${r.memberCount > 0 ? '' : ' zero'}`} aria-label={t('peopleLabel', { n: r.memberCount })} data-testid="room-count">
                    <span aria-hidden="true">● </span>
                    {t('people', { n: r.memberCount })}
                  </span>
                  <span className="room-by">{t('createdBy', { user: r.createdBy })}</span>
                </span>
              </a>
            </li>
          ))}
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
            setRooms((prev) => mergeRooms(prev ?? [], [room]));
            setDialogOpen(false);
            navigate(`/room/${room.id}`);
          }}
        />
      )}
    </div>
  );
}
