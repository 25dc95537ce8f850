import { useCallback, useEffect, useRef, useState } from 'react';
import { useI18n } from './i18n';
import { ApiError, api } from './api';
import { ChatClient, type AuthVerdict, type WebSocketLike } from './protocol/client';
import { navigate, useRoute } from './router';
import { clearSession, loadSession, saveSession, type Session } from './session';
import { ChatView } from './ui/ChatView';
import { Login } from './ui/Login';
import { RoomList } from './ui/RoomList';
import { LanguageSwitch } from './ui/LanguageSwitch';
import { StatusBadge } from './ui/StatusBadge';

/** The token never goes in the URL: the same-origin WebSocket carries the HttpOnly cookie that
 * sign-in set (docs/protocol.md, "Tokens"). `batch=1`: several messages of a room may come in one
 * MESSAGES frame (docs/protocol.md, "Batched messages"). */
function wsUrl(): string {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}/ws?batch=1`;
}

function makeClient(session: Session): ChatClient {
  return new ChatClient({
    userId: session.userId,
    url: wsUrl,
    wsFactory: (url) => new WebSocket(url) as unknown as WebSocketLike,
    history: { fetchMessages: (roomId, before, limit) => api.messages(roomId, before, limit) },
    checkAuth,
  });
}

/** GET /api/me with the cookie: a 401 means the token is refused (docs/protocol.md, "Auth expiry"). */
async function checkAuth(): Promise<AuthVerdict> {
  try {
    await api.me();
    return 'valid';
  } catch (e) {
    return e instanceof ApiError && e.status === 401 ? 'refused' : 'unknown';
  }
}

export function App() {
  const { t } = useI18n();
  const [session, setSession] = useState<Session | null>(loadSession);
  const [notice, setNotice] = useState<string | null>(null);

  const onLogin = useCallback((s: Session) => {
    saveSession(s);
    setNotice(null);
    setSession(s);
  }, []);

  const logout = useCallback((message: string | null = null) => {
    api.endSession().catch(() => undefined); // the cookie must not sign the next user of this browser in
    clearSession();
    setSession(null);
    setNotice(message);
    navigate('/', true);
  }, []);

  if (!session) return <Login onLogin={onLogin} notice={notice} />;
  return (
    <Shell
      key={session.token}
      session={session}
      onLogout={() => logout(null)}
      onExpired={() => logout(t('sessionExpired'))}
      onOtherUser={() => logout(t('otherUserSignedIn'))}
    />
  );
}

function Shell({
  session,
  onLogout,
  onExpired,
  onOtherUser,
}: {
  session: Session;
  onLogout: () => void;
  onExpired: () => void;
  onOtherUser: () => void;
}) {
  const { t } = useI18n();
  const route = useRoute();
  const [client] = useState(() => makeClient(session));
  // The parent passes new handler functions on every render (a language switch re-renders it):
  // the connection's effect reads them through a ref so that it never restarts the client.
  const handlers = useRef({ onExpired, onOtherUser });
  handlers.current = { onExpired, onOtherUser };

  useEffect(() => {
    const onExpired = () => handlers.current.onExpired();
    client.start();
    const offExpired = client.on('authExpired', onExpired);
    const offOtherUser = client.on('userMismatch', () => handlers.current.onOtherUser());
    const online = () => client.setNetworkOnline(true);
    const offline = () => client.setNetworkOnline(false);
    window.addEventListener('online', online);
    window.addEventListener('offline', offline);
    // expire the session on time, too
    let expiry: ReturnType<typeof setTimeout> | undefined;
    if (session.expiresAt) {
      const ms = session.expiresAt * 1000 - Date.now();
      if (ms < 2 ** 31 - 1) expiry = setTimeout(onExpired, Math.max(0, ms));
    }
    return () => {
      offExpired();
      offOtherUser();
      window.removeEventListener('online', online);
      window.removeEventListener('offline', offline);
      if (expiry) clearTimeout(expiry);
      client.stop();
    };
  }, [client, session.expiresAt]);

  const inRoom = route.name === 'room';
  return (
    <div className="app">
      <a className="skip-link" href="#main-content">
        {t('messages')}
      </a>
      <header className="topbar">
        <h1 className="brand">{t('appName')}</h1>
        <StatusBadge client={client} />
        <div className="topbar-right">
          <span className="whoami" data-testid="whoami" title={t('signedInAs', { user: session.userId })}>
            <span className="sr-only">{t('signedInAs', { user: session.userId })}</span>
            <span aria-hidden="true">{session.userId}</span>
          </span>
          <LanguageSwitch />
          <button type="button" className="btn btn-ghost" onClick={onLogout} data-testid="logout">
            {t('logout')}
          </button>
        </div>
      </header>
      <main className={`layout ${inRoom ? 'in-room' : 'at-home'}`}>
        <nav className="rooms-pane" aria-label={t('rooms')}>
          <RoomList client={client} session={session} activeRoomId={inRoom ? route.roomId : null} />
        </nav>
        <section className="chat-pane" id="main-content" tabIndex={-1} aria-label={t('messages')}>
          {inRoom ? (
            <ChatView key={route.roomId} client={client} roomId={route.roomId} userId={session.userId} />
          ) : (
            <p className="placeholder">{t('pickRoom')}</p>
          )}
        </section>
      </main>
    </div>
  );
}
