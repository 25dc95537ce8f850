import { useEffect, useId, useRef, useState, type FormEvent, type ReactNode } from 'react';
import { api, ApiError, type AuthMode } from '../api';
import { useI18n } from '../i18n';
import { makeSession, type Session } from '../session';
import { LanguageSwitch } from './LanguageSwitch';

/** A token handed over in the URL fragment (`#token=…`), which never reaches a server or its logs;
 * removed from the address bar at once. */
export function takeFragmentToken(loc: { hash: string }, replace: (url: string) => void, path: string): string | null {
  const params = new URLSearchParams(loc.hash.replace(/^#/, ''));
  const token = params.get('token');
  if (!token) return null;
  replace(path);
  return token;
}

/** Open mode asks for an id; jwt mode for a token from the operator's identity service. The id form
 * (the default mode's) shows until the server has said which, so it is focused on first paint. */
export function Login({ onLogin, notice }: { onLogin: (s: Session) => void; notice: string | null }) {
  const [mode, setMode] = useState<AuthMode | null>(null);
  const [fragmentToken] = useState(() =>
    takeFragmentToken(location, (url) => history.replaceState(null, '', url), location.pathname + location.search),
  );
  useEffect(() => {
    let live = true;
    api
      .authMode()
      .then((r) => live && setMode(r.mode))
      .catch(() => live && setMode('open')); // the id form then shows the server's own answer
    return () => {
      live = false;
    };
  }, []);
  if (mode === 'jwt') return <TokenLogin onLogin={onLogin} notice={notice} initialToken={fragmentToken} />;
  return <IdLogin onLogin={onLogin} notice={notice} />;
}

function IdLogin({ onLogin, notice }: { onLogin: (s: Session) => void; notice: string | null }) {
  const { t } = useI18n();
  const [userId, setUserId] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const inputRef = useRef<HTMLInputElement>(null);
  const errId = useId();
  const hintId = useId();

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (busy) return;
    setBusy(true);
    setError(null);
    try {
      const r = await api.enter(userId);
      onLogin(makeSession(r.userId, r.token, r.expiresAt));
    } catch (err) {
      setError(err instanceof ApiError && err.status !== 0 ? err.message : t('networkError'));
      setBusy(false);
      inputRef.current?.focus();
    }
  }

  return (
    <LoginCard intro={t('loginIntro')} notice={notice}>
      <form onSubmit={submit} noValidate data-testid="login-form">
        <label htmlFor="login-user-id">{t('userIdLabel')}</label>
        <div className="field-row">
          <input
            id="login-user-id"
            ref={inputRef}
            name="userId"
            value={userId}
            onChange={(e) => setUserId(e.target.value)}
            autoComplete="username"
            autoCapitalize="none"
            spellCheck={false}
            autoFocus
            aria-invalid={error ? true : undefined}
            aria-describedby={error ? `${errId} ${hintId}` : hintId}
            data-testid="login-input"
          />
          <button type="submit" className="btn btn-primary" disabled={busy} data-testid="login-submit">
            {busy ? t('entering') : t('enter')}
          </button>
        </div>
        <p id={hintId} className="hint">
          {t('userIdHint')}
        </p>
        <p id={errId} className="field-error" role="alert" data-testid="login-error">
          {error ?? ''}
        </p>
      </form>
    </LoginCard>
  );
}

function TokenLogin({
  onLogin,
  notice,
  initialToken,
}: {
  onLogin: (s: Session) => void;
  notice: string | null;
  initialToken: string | null;
}) {
  const { t } = useI18n();
  const [token, setToken] = useState(initialToken ?? '');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const inputRef = useRef<HTMLTextAreaElement>(null);
  const errId = useId();
  const hintId = useId();

  async function signIn(value: string) {
    setBusy(true);
    setError(null);
    try {
      const r = await api.startSession(value.trim());
      onLogin(makeSession(r.userId, value.trim(), r.expiresAt));
    } catch (err) {
      setError(err instanceof ApiError && err.status !== 0 ? err.message : t('networkError'));
      setBusy(false);
      inputRef.current?.focus();
    }
  }

  useEffect(() => {
    if (initialToken) void signIn(initialToken);
    // once, for the token the identity service handed over in the URL fragment
    // eslint-disable-next-line react-hooks/exhaustive-deps -- on mount only, whatever the props become
  }, []);

  function submit(e: FormEvent) {
    e.preventDefault();
    if (!busy) void signIn(token);
  }

  return (
    <LoginCard intro={t('loginIntroJwt')} notice={notice}>
      <form onSubmit={submit} noValidate data-testid="token-login-form">
        <label htmlFor="login-token">{t('tokenLabel')}</label>
        <div className="field-row">
          <textarea
            id="login-token"
            ref={inputRef}
            name="token"
            value={token}
            onChange={(e) => setToken(e.target.value)}
            autoComplete="off"
            spellCheck={false}
            rows={3}
            autoFocus
            aria-invalid={error ? true : undefined}
            aria-describedby={error ? `${errId} ${hintId}` : hintId}
            data-testid="token-input"
          />
          <button type="submit" className="btn btn-primary" disabled={busy || !token.trim()} data-testid="token-submit">
            {busy ? t('entering') : t('enter')}
          </button>
        </div>
        <p id={hintId} className="hint">
          {t('tokenHint')}
        </p>
        <p id={errId} className="field-error" role="alert" data-testid="login-error">
          {error ?? ''}
        </p>
      </form>
    </LoginCard>
  );
}

/** The page around either login form: the language switch, the title, the intro and a notice. */
function LoginCard({ intro, notice, children }: { intro: string; notice: string | null; children: ReactNode }) {
  const { t } = useI18n();
  return (
    <div className="login-page">
      <div className="login-top">
        <LanguageSwitch />
      </div>
      <main className="login-card">
        <h1 className="brand brand-big">{t('appName')}</h1>
        <h2>{t('loginTitle')}</h2>
        <p className="muted">{intro}</p>
        {notice && (
          <p className="notice" role="alert">
            {notice}
          </p>
        )}
        {children}
      </main>
    </div>
  );
}
