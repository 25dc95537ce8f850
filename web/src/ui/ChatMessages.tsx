/** The scrolled message list of a room: history edge, messages, pending sends, scroll keeping. */
import { memo, useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState, type RefObject } from 'react';
import { describeError, useI18n, type Lang, type TFunc } from '../i18n';
import type { ChatClient, PendingMessage, RoomView } from '../protocol/client';
import type { ChatMessage } from '../protocol/types';
import { firstUnread } from './indicators';

/** a view this close to the bottom counts as at the bottom: new messages keep it there */
const AT_BOTTOM_PX = 48;
/** older messages load when the view scrolls this close to the top */
const LOAD_OLDER_PX = 120;

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

function HistoryEdge({ view, loadOlder, t }: { view: RoomView | undefined; loadOlder: () => void; t: TFunc }) {
  if (view?.loadingOlder) {
    return (
      <p className="muted" role="status">
        {t('loadingOlder')}
      </p>
    );
  }
  if (view?.historyLoaded && !view.hasMore) return <p className="muted">{t('beginning')}</p>;
  if (!view?.historyLoaded) return null;
  return (
    <button type="button" className="btn btn-small btn-ghost" onClick={loadOlder} data-testid="load-older">
      {t('loadOlder')}
    </button>
  );
}

/**
 * Keeps the scroll position: sticks to the bottom for new messages (and after our own send,
 * counted by `sent`), stays put when older ones are prepended, and reports new messages that
 * arrived while the reader was scrolled up.
 */
function useScrollKeeping(view: RoomView | undefined, sent: number, loadOlderNow: () => void) {
  const scroller = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const prev = useRef<{ firstId: string | null; height: number; top: number; count: number }>({ firstId: null, height: 0, top: 0, count: 0 });
  const stickNext = useRef(false);
  const lastId = useRef<string | null>(null);
  const [unseen, setUnseen] = useState(false);
  // memoised: a fresh [] on every render would re-run the layout effect below each time
  const messages = useMemo(() => view?.messages ?? [], [view?.messages]);
  const pending = useMemo(() => view?.pending ?? [], [view?.pending]);

  const loadOlder = useCallback(() => {
    const el = scroller.current;
    if (el) prev.current = { ...prev.current, height: el.scrollHeight, top: el.scrollTop };
    loadOlderNow();
  }, [loadOlderNow]);

  // our own send: back to the bottom (runs before the layout effect below)
  useLayoutEffect(() => {
    if (sent === 0) return;
    stickNext.current = true;
    atBottom.current = true;
  }, [sent]);

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
    atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < AT_BOTTOM_PX;
    if (atBottom.current) setUnseen(false);
    prev.current = { ...prev.current, height: el.scrollHeight, top: el.scrollTop };
    if (el.scrollTop < LOAD_OLDER_PX && view?.hasMore && !view.loadingOlder && view.historyLoaded) loadOlder();
  };

  const jumpToNewest = () => {
    const el = scroller.current;
    if (el) el.scrollTop = el.scrollHeight;
    atBottom.current = true;
    setUnseen(false);
  };

  return { scroller, atBottom, onScroll, unseen, jumpToNewest, loadOlder };
}

/** Scroll only the message list (scrollIntoView would scroll the page around it too). */
function scrollToTop(box: HTMLElement, el: HTMLElement): void {
  box.scrollTop += el.getBoundingClientRect().top - box.getBoundingClientRect().top;
}

const isVisible = () => typeof document === 'undefined' || document.visibilityState === 'visible';

/**
 * The read position: the divider stays where the position was when the room's history arrived;
 * the room opens at the divider rather than at the bottom; the newest seq is reported (the client
 * throttles) whenever the view is at the bottom of a visible tab.
 */
function useReadPosition(client: ChatClient, roomId: number, view: RoomView | undefined, scroller: RefObject<HTMLDivElement | null>, atBottom: RefObject<boolean>) {
  const [dividerSeq, setDividerSeq] = useState<number | null>(null);
  const captured = useRef(false);
  const divider = useRef<HTMLLIElement>(null);
  const [dividerSeen, setDividerSeen] = useState(false);
  const messages = view?.messages ?? [];
  const newestSeq = messages.length ? messages[messages.length - 1].seq : null;

  useEffect(() => {
    if (!view?.historyLoaded || captured.current) return;
    captured.current = true;
    setDividerSeq(client.readPosition(roomId));
  }, [client, roomId, view?.historyLoaded]);

  // open at the divider, once it is placed
  const placed = useRef(false);
  useLayoutEffect(() => {
    const el = divider.current;
    const box = scroller.current;
    if (!el || !box || placed.current) return;
    placed.current = true;
    scrollToTop(box, el);
    atBottom.current = box.scrollHeight - box.scrollTop - box.clientHeight < AT_BOTTOM_PX;
  });

  const report = useCallback(() => {
    if (newestSeq !== null && atBottom.current && isVisible() && view?.live) client.markRead(roomId, newestSeq);
  }, [client, roomId, newestSeq, atBottom, view?.live]);
  useEffect(report, [report]);
  useEffect(() => {
    document.addEventListener('visibilitychange', report);
    return () => document.removeEventListener('visibilitychange', report);
  }, [report]);

  // the jump button stays until the divider has been on screen
  useEffect(() => {
    const el = divider.current;
    if (!el || dividerSeen || typeof IntersectionObserver === 'undefined') return;
    const io = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) setDividerSeen(true);
    }, { root: scroller.current });
    io.observe(el);
    return () => io.disconnect();
  });

  const jumpToUnread = () => {
    if (divider.current && scroller.current) scrollToTop(scroller.current, divider.current);
    setDividerSeen(true);
  };
  return { dividerSeq, divider, dividerSeen, report, jumpToUnread };
}

export function ChatMessages({ client, roomId, userId, view, sent }: { client: ChatClient; roomId: number; userId: string; view: RoomView | undefined; sent: number }) {
  const { t, lang } = useI18n();
  const fmt = useFormatters(lang);
  const loadOlderNow = useCallback(() => void client.loadOlder(roomId).catch(() => undefined), [client, roomId]);
  const { scroller, atBottom, onScroll, unseen, jumpToNewest, loadOlder } = useScrollKeeping(view, sent, loadOlderNow);
  const { dividerSeq, divider, dividerSeen, report, jumpToUnread } = useReadPosition(client, roomId, view, scroller, atBottom);
  const messages = view?.messages ?? [];
  const pending = view?.pending ?? [];
  const unreadFrom = firstUnread(messages, dividerSeq, userId);
  return (
    <>
      {unreadFrom && !dividerSeen && (
        <button type="button" className="btn btn-small jump-unread" onClick={jumpToUnread} data-testid="jump-unread">
          ↑ {t('jumpToUnread')}
        </button>
      )}
      <div
        className="scroller"
        ref={scroller}
        // a scrolled region must be reachable from the keyboard (arrow keys, Page Up/Down)
        tabIndex={0}
        role="region"
        aria-label={t('messageHistory')}
        onScroll={() => {
          onScroll();
          report();
        }}
        data-testid="scroller"
      >
        <div className="history-edge">
          <HistoryEdge view={view} loadOlder={loadOlder} t={t} />
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
          {messages.map((m) => [
            m === unreadFrom && (
              <li key="unread-divider" ref={divider} className="unread-divider" data-testid="unread-divider" data-seq={dividerSeq ?? undefined}>
                <span>{t('newMessages')}</span>
              </li>
            ),
            <MessageItem key={m.id} m={m} own={m.senderId === userId && m.kind === 'chat'} t={t} fmt={fmt} />,
          ])}
          {pending.map((p) => (
            <PendingItem key={p.clientMsgId} p={p} t={t} client={client} />
          ))}
        </ol>
      </div>
      {unseen && (
        <button type="button" className="btn btn-primary jump-newest" onClick={jumpToNewest} data-testid="jump-newest">
          {t('newMessages')} ↓
        </button>
      )}
    </>
  );
}
