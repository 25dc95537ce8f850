import { memo, useCallback, useEffect, useId, useLayoutEffect, useRef, useState, type KeyboardEvent } from 'react';
import { api, ApiError } from '../api';
import { describeError, useI18n, type Lang, type TFunc } from '../i18n';
import { textLength, type ChatClient, type PendingMessage } from '../protocol/client';
import { MAX_TEXT, type ChatMessage, type Room } from '../protocol/types';
import { navigate } from '../router';
import { useRoomView } from '../useClient';

const MEMBERS_POLL_MS = 10000;
const COUNTER_FROM = 3500;

function useFormatters(lang: Lang) {
  return useCallback(
    (ms: number) => {
      const d = new Date(ms);
      const now = new Date();
      const sameDay = d.toDateString() === now.toDateString();
      const locale = lang === 'ko' ? 'ko-KR' : 'en';
      const short = new Intl.DateTimeFormat(locale, sameDay ? { hour: 'numeric', minute: '2-digit' } : { month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit' }).format(d);
      const full = new Intl.DateTimeFormat(locale, { dateStyle: 'full', timeStyle: 'medium' }).format(d);
      return { short, full, iso: d.toISOString() };
    },
    [lang],
  );
}

type Fmt = ReturnType<typeof useFormatters>;

const MessageItem = memo(function MessageItem({ m, own, t, fmt }: { m: ChatMessage; own: boolean; t: TFunc; fmt: Fmt }) {
  const time = fmt(m.sentAt);
  const timeEl = (
    <time dateTime={time.iso} title={time.full} className="msg-time">
      {time.short}
    </time>
  );
  if (m.kind === 'join' || m.kind === 'leave') {
    return (
      <li className="msg system" data-testid="msg" data-id={m.id} data-seq={m.seq} data-kind={m.kind} data-sender={m.senderId}>
        <span className="system-text">{t(m.kind === 'join' ? 'joined' : 'left', { user: m.senderId })}</span> {timeEl}
      </li>
    );
  }
  return (
    <li
      className={`msg ${own ? 'own' : 'other'}`}
      data-testid="msg"
      data-id={m.id}
      data-seq={m.seq}
      data-kind={m.kind}
      data-sender={m.senderId}
    >
      <div className="bubble">
        {own ? (
          <span className="sr-only">{t('you')}: </span>
        ) : (
          <span className="sender">
            {m.senderId}
            <span className="sr-only">: </span>
          </span>
        )}
        <p className="text" data-testid="msg-text">
          {m.text}
        </p>
        {timeEl}
      </div>
    </li>
  );
});

function PendingItem({ p, t, client }: { p: PendingMessage; t: TFunc; client: ChatClient }) {
  return (
    <li className={`msg own ${p.status}`} data-testid="pending" data-status={p.status} data-client-msg-id={p.clientMsgId}>
      <div className="bubble">
        <span className="sr-only">{t('you')}: </span>
        <p className="text">{p.text}</p>
        {p.status === 'pending' ? (
          <span className="msg-time">{t('sending')}</span>
        ) : (
          <span className="msg-fail">
            <span role="alert">{t('notSent', { reason: describeError(t, p.error) })}</span>{' '}
            <button type="button" className="btn btn-small" onClick={() => client.retry(p.clientMsgId)} data-testid="retry">
              {t('retry')}
            </button>{' '}
            <button type="button" className="btn btn-small btn-ghost" onClick={() => client.discard(p.clientMsgId)}>
              {t('discard')}
            </button>
          </span>
        )}
      </div>
    </li>
  );
}

export function ChatView({ client, roomId, userId }: { client: ChatClient; roomId: number; userId: string }) {
  const { t, lang } = useI18n();
  const fmt = useFormatters(lang);
  const view = useRoomView(client, roomId);
  const [room, setRoom] = useState<Room | null>(null);
  const [roomMissing, setRoomMissing] = useState(false);
  const [members, setMembers] = useState<string[] | null>(null);
  const [showMembers, setShowMembers] = useState(false);
  const [announce, setAnnounce] = useState('');
  const [draft, setDraft] = useState('');
  const [sendError, setSendError] = useState<string | null>(null);
  const scroller = useRef<HTMLDivElement>(null);
  const textarea = useRef<HTMLTextAreaElement>(null);
  const atBottom = useRef(true);
  const prev = useRef<{ firstId: string | null; height: number; top: number; count: number }>({ firstId: null, height: 0, top: 0, count: 0 });
  const stickNext = useRef(false);
  const [unseen, setUnseen] = useState(false);
  const lastId = useRef<string | null>(null);
  const tRef = useRef(t);
  tRef.current = t;
  const membersId = useId();
  const counterId = useId();
  const hintId = useId();

  // enter / leave the room
  useEffect(() => {
    client.openRoom(roomId).catch(() => undefined);
    return () => client.closeRoom(roomId);
  }, [client, roomId]);

  // room details
  useEffect(() => {
    const ac = new AbortController();
    api.room(roomId, ac.signal).then(
      (r) => setRoom(r),
      (e) => {
        if (e instanceof ApiError && e.status === 404) setRoomMissing(true);
      },
    );
    return () => ac.abort();
  }, [roomId]);

  // members: polled, and refreshed on join/leave
  const refreshMembers = useCallback(() => {
    api.members(roomId).then(
      (r) => setMembers([...r.members].sort((a, b) => a.localeCompare(b))),
      () => undefined,
    );
  }, [roomId]);
  useEffect(() => {
    refreshMembers();
    const id = setInterval(refreshMembers, MEMBERS_POLL_MS);
    const offMsg = client.on('message', (m) => {
      if (m.roomId !== roomId) return;
      if (m.kind === 'join' || m.kind === 'leave') {
        refreshMembers();
        setAnnounce(tRef.current(m.kind === 'join' ? 'joined' : 'left', { user: m.senderId }));
      } else if (m.senderId !== userId) {
        setAnnounce(tRef.current('newMessageFrom', { user: m.senderId, text: m.text.slice(0, 200) }));
      }
    });
    const offConn = client.on('connected', () => {
      refreshMembers();
      // a history load that failed while the connection was down is tried again
      client.openRoom(roomId).catch(() => undefined);
    });
    return () => {
      clearInterval(id);
      offMsg();
      offConn();
    };
  }, [client, roomId, userId, refreshMembers]);

  useEffect(() => {
    textarea.current?.focus();
  }, [roomId]);

  const messages = view?.messages ?? [];
  const pending = view?.pending ?? [];

  const loadOlder = useCallback(() => {
    const el = scroller.current;
    if (el) prev.current = { ...prev.current, height: el.scrollHeight, top: el.scrollTop };
    client.loadOlder(roomId).catch(() => undefined);
  }, [client, roomId]);

  // keep the scroll position: stick to the bottom for new messages, stay put when older ones are prepended
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const firstId = messages.length ? messages[0].id : null;
    const p = prev.current;
    if (p.firstId !== null && firstId !== p.firstId && p.count > 0 && messages.length > p.count && !atBottom.current) {
      el.scrollTop = p.top + (el.scrollHeight - p.height);
    } else if (atBottom.current || stickNext.current) {
      el.scrollTop = el.scrollHeight;
      stickNext.current = false;
    }
    prev.current = { firstId, height: el.scrollHeight, top: el.scrollTop, count: messages.length };
    const newest = messages.length ? messages[messages.length - 1].id : null;
    if (newest !== lastId.current) {
      if (lastId.current !== null && !atBottom.current) setUnseen(true);
      lastId.current = newest;
    }
    // a short history that does not fill the view: fetch more so scrolling is possible
    if (view?.historyLoaded && view.hasMore && !view.loadingOlder && el.scrollHeight <= el.clientHeight + 10) loadOlder();
  }, [messages, pending, view?.historyLoaded, view?.hasMore, view?.loadingOlder, loadOlder]);

  const onScroll = () => {
    const el = scroller.current;
    if (!el) return;
    atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 48;
    if (atBottom.current) setUnseen(false);
    prev.current = { ...prev.current, height: el.scrollHeight, top: el.scrollTop };
    if (el.scrollTop < 120 && view?.hasMore && !view.loadingOlder && view.historyLoaded) loadOlder();
  };

  const length = textLength(draft);
  const over = length > MAX_TEXT;
  const canSend = draft.trim().length > 0 && !over;

  function send() {
    if (!canSend) return;
    try {
      client.send(roomId, draft);
      setDraft('');
      setSendError(null);
      stickNext.current = true;
      atBottom.current = true;
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

  // grow the composer with its content (up to a limit set in CSS)
  useLayoutEffect(() => {
    const ta = textarea.current;
    if (!ta) return;
    ta.style.height = 'auto';
    ta.style.height = `${Math.min(ta.scrollHeight, 200)}px`;
  }, [draft]);

  if (roomMissing) {
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
        <div className="scroller" ref={scroller} onScroll={onScroll} data-testid="scroller">
          <div className="history-edge">
            {view?.loadingOlder ? (
              <p className="muted" role="status">
                {t('loadingOlder')}
              </p>
            ) : view?.historyLoaded && !view.hasMore ? (
              <p className="muted">{t('beginning')}</p>
            ) : view?.historyLoaded ? (
              <button type="button" className="btn btn-small btn-ghost" onClick={loadOlder} data-testid="load-older">
                {t('loadOlder')}
              </button>
            ) : null}
          </div>
          {!view?.historyLoaded && !view?.error && <p className="muted center">{t('loading')}</p>}
          {view?.error && (
            <p className="field-error center" role="alert">
              {view.error.code === 'HISTORY' ? t('historyError', { reason: view.error.message }) : t('roomError', { reason: describeError(t, view.error) })}{' '}
              <button type="button" className="btn btn-small" onClick={() => client.openRoom(roomId).catch(() => undefined)}>
                {t('retry')}
              </button>
            </p>
          )}
          {view?.historyLoaded && messages.length === 0 && pending.length === 0 && <p className="muted center">{t('noMessages')}</p>}
          <ol className="messages" aria-label={t('messages')} data-testid="messages">
            {messages.map((m) => (
              <MessageItem key={m.id} m={m} own={m.senderId === userId && m.kind === 'chat'} t={t} fmt={fmt} />
            ))}
            {pending.map((p) => (
              <PendingItem key={p.clientMsgId} p={p} t={t} client={client} />
            ))}
          </ol>
        </div>
        {unseen && (
          <button
            type="button"
            className="btn btn-primary jump-newest"
            onClick={() => {
              const el = scroller.current;
              if (el) el.scrollTop = el.scrollHeight;
              atBottom.current = true;
              setUnseen(false);
            }}
            data-testid="jump-newest"
          >
            {t('newMessages')} ↓
          </button>
        )}
        <aside id={membersId} className="members" aria-label={t('members')} data-testid="members">
          <h3>{t('membersCount', { n: memberCount })}</h3>
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
      </div>
      <div className="sr-only" aria-live="polite" aria-atomic="true" data-testid="announce">
        {announce}
      </div>
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
          onChange={(e) => setDraft(e.target.value)}
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
    </div>
  );
}
