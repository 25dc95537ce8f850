import { useEffect, useState } from 'react';
import { useI18n } from '../i18n';
import type { ChatClient } from '../protocol/client';
import { useClientSnapshot } from '../useClient';

export function StatusBadge({ client }: { client: ChatClient }) {
  const { t } = useI18n();
  const snap = useClientSnapshot(client);
  const [, tick] = useState(0);
  const waiting = snap.nextAttemptAt !== null && snap.status !== 'connected';
  useEffect(() => {
    if (!waiting) return;
    const id = setInterval(() => tick((n) => n + 1), 1000);
    return () => clearInterval(id);
  }, [waiting]);
  const secs = waiting ? Math.max(0, Math.ceil((snap.nextAttemptAt! - Date.now()) / 1000)) : 0;
  const label =
    snap.status === 'connected' && snap.nodeId ? t('connectedTo', { node: snap.nodeId }) : t(`status_${snap.status}`);
  return (
    <div
      className={`status status-${snap.status}`}
      data-testid="conn-status"
      data-status={snap.status}
      data-node-id={snap.nodeId ?? ''}
      data-session-id={snap.sessionId ?? ''}
    >
      <span className="status-dot" aria-hidden="true" />
      <span role="status" aria-live="polite" aria-label={t('connectionStatus')} className="status-text">
        {label}
      </span>
      {waiting && secs > 0 && <span className="status-extra">({t('retryIn', { s: secs })})</span>}
      {waiting && (
        <button type="button" className="btn btn-link" onClick={() => client.reconnectNow()}>
          {t('retryNow')}
        </button>
      )}
    </div>
  );
}
