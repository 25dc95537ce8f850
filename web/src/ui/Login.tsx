import { useId, useRef, useState, type FormEvent } from 'react';
import { api, ApiError } from '../api';
import { useI18n } from '../i18n';
import { makeSession, type Session } from '../session';
import { LanguageSwitch } from './LanguageSwitch';

export function Login({ onLogin, notice }: { onLogin: (s: Session) => void; notice: string | null }) {
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
    <div className="login-page">
      <div className="login-top">
        <LanguageSwitch />
      </div>
      <main className="login-card">
        <h1 className="brand brand-big">{t('appName')}</h1>
        <h2>{t('loginTitle')}</h2>
        <p className="muted">{t('loginIntro')}</p>
        {notice && (
          <p className="notice" role="alert">
            {notice}
          </p>
        )}
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
      </main>
    </div>
  );
}
