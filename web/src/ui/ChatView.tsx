/** One room: its header, the message list, the people panel and the composer. */
import { useEffect, useId, useRef, useState } from 'react';
import { api, ApiError } from '../api';
import { useI18n } from '../i18n';
import type { ChatClient } from '../protocol/client';
import type { Room } from '../protocol/types';
import { navigate } from '../router';
import { useRoomView } from '../useClient';
import { ChatMessages } from './ChatMessages';
import { Composer } from './Composer';
import { typingText } from './indicators';
import { PeoplePanel, useMembers } from './PeoplePanel';

/** The room's details; `missing` when it does not exist. */
function useRoom(roomId: number): { room: Room | null; missing: boolean } {
  const [room, setRoom] = useState<Room | null>(null);
  const [missing, setMissing] = useState(false);
  useEffect(() => {
    const ac = new AbortController();
    api.room(roomId, ac.signal).then(
      (r) => setRoom(r),
      (e) => {
        if (e instanceof ApiError && e.status === 404) setMissing(true);
      },
    );
    return () => ac.abort();
  }, [roomId]);
  return { room, missing };
}

/** The polite live region's text: joins, leaves and others' messages. */
function useAnnouncements(client: ChatClient, roomId: number, userId: string): string {
  const { t } = useI18n();
  const [announce, setAnnounce] = useState('');
  const tRef = useRef(t);
  tRef.current = t;
  useEffect(
    () =>
      client.on('message', (m) => {
        if (m.roomId !== roomId) return;
        if (m.kind === 'join' || m.kind === 'leave') setAnnounce(tRef.current(m.kind === 'join' ? 'joined' : 'left', { user: m.senderId }));
        else if (m.senderId !== userId) setAnnounce(tRef.current('newMessageFrom', { user: m.senderId, text: m.text.slice(0, 200) }));
      }),
    [client, roomId, userId],
  );
  return announce;
}

export function ChatView({ client, roomId, userId }: { client: ChatClient; roomId: number; userId: string }) {
  const { t } = useI18n();
  const view = useRoomView(client, roomId);
  const { room, missing } = useRoom(roomId);
  const members = useMembers(client, roomId);
  const announce = useAnnouncements(client, roomId, userId);
  const [showMembers, setShowMembers] = useState(false);
  const [sent, setSent] = useState(0);
  const membersId = useId();

  // enter / leave the room; a history load that failed while the connection was down is tried again
  useEffect(() => {
    client.openRoom(roomId).catch(() => undefined);
    const offConn = client.on('connected', () => void client.openRoom(roomId).catch(() => undefined));
    return () => {
      offConn();
      client.closeRoom(roomId);
    };
  }, [client, roomId]);

  if (missing) {
    return (
      <div className="chat chat-error">
        <button type="button" className="btn btn-ghost back" onClick={() => navigate('/')}>
          ← {t('back')}
        </button>
        <p role="alert">{t('roomNotFound')}</p>
      </div>
    );
  }

  const memberCount = members?.length ?? room?.memberCount ?? 0;
  return (
    <div className={`chat${showMembers ? ' members-open' : ''}`} data-testid="chat" data-room-id={roomId} data-live={view?.live ? 'true' : 'false'}>
      <div className="chat-head">
        <button type="button" className="btn btn-ghost back" onClick={() => navigate('/')} aria-label={t('back')}>
          ←<span className="back-text"> {t('rooms')}</span>
        </button>
        <h2 className="chat-title" data-testid="chat-title">
          {room?.name ?? '…'}
        </h2>
        <button
          type="button"
          className="btn btn-ghost members-toggle"
          aria-expanded={showMembers}
          aria-controls={membersId}
          onClick={() => setShowMembers((s) => !s)}
          data-testid="members-toggle"
        >
          {t('membersCount', { n: memberCount })}
        </button>
      </div>
      <div className="chat-body">
        <ChatMessages client={client} roomId={roomId} userId={userId} view={view} sent={sent} />
        <PeoplePanel id={membersId} members={members} count={memberCount} userId={userId} />
      </div>
      <div className="sr-only" aria-live="polite" aria-atomic="true" data-testid="announce">
        {announce}
      </div>
      <p className="typing-line" data-testid="typing" data-users={view?.typing.join(' ') ?? ''}>
        {typingText(t, view?.typing ?? [])}
      </p>
      <Composer client={client} roomId={roomId} onSent={() => setSent((n) => n + 1)} />
    </div>
  );
}
