/** The message box: Enter sends (not during an IME composition), Shift+Enter adds a line, a code-point counter. */
import { useEffect, useId, useLayoutEffect, useRef, useState, type KeyboardEvent } from 'react';
import { useI18n } from '../i18n';
import { textLength, type ChatClient } from '../protocol/client';
import { MAX_TEXT } from '../protocol/types';

const COUNTER_FROM = 3500;
const MAX_HEIGHT_PX = 200;

export function Composer({ client, roomId, onSent }: { client: ChatClient; roomId: number; onSent: () => void }) {
  const { t } = useI18n();
  const [draft, setDraft] = useState('');
  const [sendError, setSendError] = useState<string | null>(null);
  const textarea = useRef<HTMLTextAreaElement>(null);
  const counterId = useId();
  const hintId = useId();

  useEffect(() => {
    textarea.current?.focus();
  }, [roomId]);

  // grow with the content, up to a limit
  useLayoutEffect(() => {
    const ta = textarea.current;
    if (!ta) return;
    ta.style.height = 'auto';
    ta.style.height = `${Math.min(ta.scrollHeight, MAX_HEIGHT_PX)}px`;
  }, [draft]);

  const length = textLength(draft);
  const over = length > MAX_TEXT;
  const canSend = draft.trim().length > 0 && !over;

  function send() {
    if (!canSend) return;
    try {
      client.send(roomId, draft);
      setDraft('');
      setSendError(null);
      onSent();
    } catch (e) {
      setSendError((e as Error).message);
    }
  }

  function onKeyDown(e: KeyboardEvent<HTMLTextAreaElement>) {
    if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      send();
    }
  }

  return (
    <form
      className="composer"
      onSubmit={(e) => {
        e.preventDefault();
        send();
      }}
    >
      <label htmlFor="composer-input" className="sr-only">
        {t('messageLabel')}
      </label>
      <textarea
        id="composer-input"
        ref={textarea}
        value={draft}
        rows={1}
        onChange={(e) => {
          setDraft(e.target.value);
          if (e.target.value.trim()) client.typing(roomId);
        }}
        onKeyDown={onKeyDown}
        placeholder={t('composerHint')}
        aria-describedby={`${hintId} ${counterId}`}
        aria-invalid={over ? true : undefined}
        data-testid="composer"
      />
      <span id={hintId} className="sr-only">
        {t('composerHint')}
      </span>
      <div className="composer-side">
        <span
          id={counterId}
          className={`counter${length >= COUNTER_FROM ? ' near' : ''}${over ? ' over' : ''}`}
          aria-live={length >= COUNTER_FROM ? 'polite' : 'off'}
          data-testid="counter"
        >
          {over ? t('tooLong', { n: length - MAX_TEXT }) : `${length}/${MAX_TEXT}`}
          <span className="sr-only"> ({t('charCount', { n: length, max: MAX_TEXT })})</span>
        </span>
        <button type="submit" className="btn btn-primary" disabled={!canSend} data-testid="send">
          {t('send')}
        </button>
      </div>
      {sendError && (
        <p className="field-error" role="alert">
          {sendError}
        </p>
      )}
    </form>
  );
}
