import { useEffect, useId, useRef, useState, type FormEvent } from 'react';
import { api, ApiError } from '../api';
import { useI18n } from '../i18n';
import type { Room } from '../protocol/types';

const MAX_NAME = 100;

export function validateRoomName(name: string): { ok: true } | { ok: false; reason: 'empty' | 'long'; n: number } {
  const trimmed = name.trim();
  const n = [...trimmed].length;
  if (n === 0) return { ok: false, reason: 'empty', n };
  if (n > MAX_NAME) return { ok: false, reason: 'long', n };
  return { ok: true };
}

export function CreateRoomDialog({
  token,
  onClose,
  onCreated,
}: {
  token: string;
  onClose: () => void;
  onCreated: (room: Room) => void;
}) {
  const { t } = useI18n();
  const ref = useRef<HTMLDialogElement>(null);
  const [name, setName] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const titleId = useId();
  const errId = useId();
  const hintId = useId();

  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
    return () => d?.close();
  }, []);

  // close the modal first (it makes the rest of the page inert), so focus can go back to the opener
  function cancel() {
    ref.current?.close();
    onClose();
  }

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (busy) return;
    const v = validateRoomName(name);
    if (!v.ok) {
      setError(v.reason === 'empty' ? t('roomNameEmpty') : t('roomNameTooLong', { n: v.n }));
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const room = await api.createRoom(name.trim(), token);
      onCreated(room);
    } catch (err) {
      setError(err instanceof ApiError && err.status !== 0 ? err.message : t('networkError'));
      setBusy(false);
    }
  }

  const n = [...name.trim()].length;
  return (
    <dialog
      ref={ref}
      className="dialog"
      aria-labelledby={titleId}
      onCancel={(e) => {
        e.preventDefault();
        cancel();
      }}
      data-testid="create-room-dialog"
    >
      <form onSubmit={submit} noValidate>
        <h2 id={titleId}>{t('createRoomTitle')}</h2>
        <label htmlFor="new-room-name">{t('roomName')}</label>
        <input
          id="new-room-name"
          value={name}
          onChange={(e) => {
            setName(e.target.value);
            if (error) setError(null);
          }}
          autoFocus
          autoComplete="off"
          aria-invalid={error ? true : undefined}
          aria-describedby={`${hintId} ${errId}`}
          data-testid="new-room-name"
        />
        <p id={hintId} className={`hint${n > MAX_NAME ? ' over' : ''}`}>
          {t('roomNameHint')} · {n}/{MAX_NAME}
        </p>
        <p id={errId} className="field-error" role="alert" data-testid="new-room-error">
          {error ?? ''}
        </p>
        <div className="dialog-actions">
          <button type="button" className="btn" onClick={cancel}>
            {t('cancel')}
          </button>
          <button type="submit" className="btn btn-primary" disabled={busy} data-testid="new-room-submit">
            {busy ? t('creating') : t('create')}
          </button>
        </div>
      </form>
    </dialog>
  );
}
