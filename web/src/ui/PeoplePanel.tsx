/** Who is in the room: polled, and fetched again on each join/leave and reconnect. */
import { useCallback, useEffect, useState } from 'react';
import { api } from '../api';
import { useI18n } from '../i18n';
import type { ChatClient } from '../protocol/client';

const MEMBERS_POLL_MS = 10000;

export function useMembers(client: ChatClient, roomId: number): string[] | null {
  const [members, setMembers] = useState<string[] | null>(null);
  const refresh = useCallback(() => {
    api.members(roomId).then(
      (r) => setMembers([...r.members].sort((a, b) => a.localeCompare(b))),
      () => undefined,
    );
  }, [roomId]);
  useEffect(() => {
    refresh();
    const id = setInterval(refresh, MEMBERS_POLL_MS);
    const offMsg = client.on('message', (m) => {
      if (m.roomId === roomId && (m.kind === 'join' || m.kind === 'leave')) refresh();
    });
    const offConn = client.on('connected', refresh);
    return () => {
      clearInterval(id);
      offMsg();
      offConn();
    };
  }, [client, roomId, refresh]);
  return members;
}

export function PeoplePanel({ id, members, count, userId }: { id: string; members: string[] | null; count: number; userId: string }) {
  const { t } = useI18n();
  return (
    <aside id={id} className="members" aria-label={t('members')} data-testid="members">
      <h3>{t('membersCount', { n: count })}</h3>
      {members && members.length === 0 && <p className="muted">{t('noMembers')}</p>}
      <ul>
        {(members ?? []).map((u) => (
          <li key={u} data-testid="member">
            <span className="presence-dot" aria-hidden="true" />
            {u}
            {u === userId && <span className="muted"> ({t('you')})</span>}
          </li>
        ))}
      </ul>
    </aside>
  );
}
