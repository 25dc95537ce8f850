import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from 'react';

export type Lang = 'en' | 'ko';

/** A string, or its plural forms chosen by the `n` parameter through Intl.PluralRules. */
type PluralForms = Partial<Record<Intl.LDMLPluralRule, string>> & { other: string };
type Entry = string | PluralForms;

const en = {
  appName: 'chattrio',
  language: 'Language',
  // login
  loginTitle: 'Sign in',
  loginIntro: 'Pick an id to chat with. New ids are created on the spot.',
  userIdLabel: 'Your id',
  userIdHint: 'Letters, digits, _ - . (up to 32)',
  enter: 'Enter',
  entering: 'Entering…',
  networkError: 'Cannot reach the server.',
  loginIntroJwt: 'This server takes identities from its operator\'s sign-in service. Sign in there; it sends you back here, or gives you a token to paste below.',
  tokenLabel: 'Your token',
  tokenHint: 'A token from your sign-in service (it is kept for this tab only)',
  otherUserSignedIn: 'Another user signed in on this browser. Please sign in again.',
  // header
  signedInAs: 'Signed in as {user}',
  logout: 'Log out',
  sessionExpired: 'Your session has expired. Please sign in again.',
  // status
  status_idle: 'Not connected',
  status_connecting: 'Connecting…',
  status_connected: 'Connected',
  status_reconnecting: 'Reconnecting…',
  status_offline: 'Offline',
  status_closed: 'Disconnected',
  connectedTo: 'Connected to {node}',
  retryIn: 'next try in {s} s',
  retryNow: 'Retry now',
  connectionStatus: 'Connection status',
  // rooms
  rooms: 'Rooms',
  roomList: 'Room list',
  noRooms: 'No rooms yet. Create the first one!',
  newRoom: 'New room',
  people: '{n} online',
  peopleLabel: { one: '{n} person in the room', other: '{n} people in the room' },
  createdBy: 'by {user}',
  roomsLoadError: 'Could not load rooms: {reason}',
  newRoomAnnounce: 'New room: {name}',
  searchRooms: 'Search rooms',
  noRoomsFound: 'No room matches “{q}”.',
  loadMoreRooms: 'More rooms',
  loadingRooms: 'Loading rooms…',
  // create dialog
  createRoomTitle: 'Create a room',
  roomName: 'Room name',
  roomNameHint: '1 to 100 characters',
  roomNameEmpty: 'Enter a name.',
  roomNameTooLong: { one: 'At most 100 characters ({n} character now).', other: 'At most 100 characters ({n} now).' },
  create: 'Create',
  creating: 'Creating…',
  cancel: 'Cancel',
  // chat
  back: 'Back to rooms',
  pickRoom: 'Pick a room on the left, or create one.',
  roomNotFound: 'This room does not exist.',
  loading: 'Loading…',
  loadOlder: 'Load older messages',
  loadingOlder: 'Loading older messages…',
  beginning: 'This is the beginning of the room.',
  messages: 'Messages',
  noMessages: 'No messages yet. Say hello!',
  joined: '{user} joined',
  left: '{user} left',
  you: 'You',
  sending: 'Sending…',
  notSent: 'Not sent: {reason}',
  retry: 'Retry',
  discard: 'Discard',
  messageLabel: 'Message',
  composerHint: 'Enter sends, Shift+Enter adds a line',
  send: 'Send',
  charCount: '{n} of {max} characters',
  tooLong: { one: 'Too long by {n} character', other: 'Too long by {n} characters' },
  members: 'People here',
  membersCount: 'People ({n})',
  noMembers: 'Nobody is here right now.',
  newMessageFrom: '{user}: {text}',
  historyError: 'Could not load messages: {reason}',
  roomError: 'Cannot enter this room: {reason}',
  today: 'Today',
  newMessages: 'New messages',
  unreadLabel: { one: '{n} unread message', other: '{n} unread messages' },
  unreadMany: 'More than 99 unread messages',
  jumpToUnread: 'First unread',
  messageHistory: 'Message history',
  typingOne: '{user} is typing…',
  typingMany: { one: '{user} and {n} other are typing…', other: '{user} and {n} others are typing…' },
  // the server's ERROR codes (docs/protocol.md), and the client's own TIMEOUT
  error_BAD_FRAME: 'the server did not understand the request',
  error_UNKNOWN_TYPE: 'the server does not know this request',
  error_TOO_LARGE: 'the message is too large',
  error_BINARY_NOT_SUPPORTED: 'binary data is not supported',
  error_BAD_DESTINATION: 'no such destination',
  error_NO_SUCH_ROOM: 'this room does not exist',
  error_NOT_SUBSCRIBED: 'not in this room any more',
  error_BAD_TEXT: 'the text is not allowed (empty, too long, or a forbidden character)',
  error_UNAVAILABLE: 'the service is busy or partly down; try again',
  error_INTERNAL: 'the server had a problem',
  error_RATE_LIMITED: 'too many requests at once; wait a moment',
  error_REPLAY_TOO_LONG: 'too far behind to catch up; loading the newest messages',
  error_TOO_MANY_ROOMS: 'too many rooms open at once; close one and try again',
  error_TIMEOUT: 'no answer from the server',
} satisfies Record<string, Entry>;

export type MessageKey = keyof typeof en;

const ko: Record<MessageKey, Entry> = {
  appName: 'chattrio',
  language: '언어',
  loginTitle: '로그인',
  loginIntro: '채팅에 사용할 아이디를 입력하세요. 새 아이디는 바로 만들어집니다.',
  userIdLabel: '아이디',
  userIdHint: '글자, 숫자, _ - . (최대 32자)',
  enter: '입장',
  entering: '입장 중…',
  networkError: '서버에 연결할 수 없습니다.',
  loginIntroJwt: '이 서버는 운영자의 로그인 서비스에서 신원을 받습니다. 그곳에서 로그인하면 이리로 돌아오거나, 아래에 붙여 넣을 토큰을 받습니다.',
  tokenLabel: '토큰',
  tokenHint: '로그인 서비스에서 받은 토큰 (이 탭에만 보관됩니다)',
  otherUserSignedIn: '이 브라우저에서 다른 사용자가 로그인했습니다. 다시 로그인하세요.',
  signedInAs: '{user}(으)로 로그인됨',
  logout: '로그아웃',
  sessionExpired: '세션이 만료되었습니다. 다시 로그인하세요.',
  status_idle: '연결 안 됨',
  status_connecting: '연결 중…',
  status_connected: '연결됨',
  status_reconnecting: '다시 연결 중…',
  status_offline: '오프라인',
  status_closed: '연결 끊김',
  connectedTo: '{node}에 연결됨',
  retryIn: '{s}초 후 재시도',
  retryNow: '지금 재시도',
  connectionStatus: '연결 상태',
  rooms: '채팅방',
  roomList: '채팅방 목록',
  noRooms: '아직 채팅방이 없습니다. 첫 번째 방을 만들어 보세요!',
  newRoom: '새 채팅방',
  people: '{n}명 접속',
  peopleLabel: '방에 {n}명 있음',
  createdBy: '만든 사람 {user}',
  roomsLoadError: '채팅방을 불러오지 못했습니다: {reason}',
  newRoomAnnounce: '새 채팅방: {name}',
  searchRooms: '채팅방 검색',
  noRoomsFound: '“{q}”에 맞는 채팅방이 없습니다.',
  loadMoreRooms: '채팅방 더 보기',
  loadingRooms: '채팅방을 불러오는 중…',
  createRoomTitle: '채팅방 만들기',
  roomName: '방 이름',
  roomNameHint: '1~100자',
  roomNameEmpty: '이름을 입력하세요.',
  roomNameTooLong: '최대 100자입니다 (현재 {n}자).',
  create: '만들기',
  creating: '만드는 중…',
  cancel: '취소',
  back: '채팅방 목록으로',
  pickRoom: '왼쪽에서 채팅방을 고르거나 새로 만드세요.',
  roomNotFound: '존재하지 않는 채팅방입니다.',
  loading: '불러오는 중…',
  loadOlder: '이전 메시지 불러오기',
  loadingOlder: '이전 메시지를 불러오는 중…',
  beginning: '채팅방의 처음입니다.',
  messages: '메시지',
  noMessages: '아직 메시지가 없습니다. 인사해 보세요!',
  joined: '{user}님이 들어왔습니다',
  left: '{user}님이 나갔습니다',
  you: '나',
  sending: '보내는 중…',
  notSent: '전송 실패: {reason}',
  retry: '다시 보내기',
  discard: '삭제',
  messageLabel: '메시지',
  composerHint: 'Enter로 보내기, Shift+Enter로 줄바꿈',
  send: '보내기',
  charCount: '{max}자 중 {n}자',
  tooLong: '{n}자 초과',
  members: '참여자',
  membersCount: '참여자 ({n})',
  noMembers: '지금 아무도 없습니다.',
  newMessageFrom: '{user}: {text}',
  historyError: '메시지를 불러오지 못했습니다: {reason}',
  roomError: '채팅방에 들어갈 수 없습니다: {reason}',
  today: '오늘',
  newMessages: '새 메시지',
  unreadLabel: '읽지 않은 메시지 {n}개',
  unreadMany: '읽지 않은 메시지 99개 이상',
  jumpToUnread: '처음 안 읽은 메시지',
  messageHistory: '메시지 기록',
  typingOne: '{user}님이 입력 중…',
  typingMany: '{user}님 외 {n}명이 입력 중…',
  error_BAD_FRAME: '서버가 요청을 이해하지 못했습니다',
  error_UNKNOWN_TYPE: '서버가 알지 못하는 요청입니다',
  error_TOO_LARGE: '메시지가 너무 큽니다',
  error_BINARY_NOT_SUPPORTED: '바이너리 데이터는 지원하지 않습니다',
  error_BAD_DESTINATION: '없는 대상입니다',
  error_NO_SUCH_ROOM: '존재하지 않는 채팅방입니다',
  error_NOT_SUBSCRIBED: '더 이상 이 채팅방에 있지 않습니다',
  error_BAD_TEXT: '보낼 수 없는 내용입니다 (비어 있거나, 너무 길거나, 허용되지 않는 문자)',
  error_UNAVAILABLE: '서비스가 바쁘거나 일부 중단되었습니다. 다시 시도하세요',
  error_INTERNAL: '서버에 문제가 생겼습니다',
  error_RATE_LIMITED: '요청이 너무 많습니다. 잠시 기다려 주세요',
  error_REPLAY_TOO_LONG: '따라잡기에는 너무 많이 밀렸습니다. 최신 메시지를 불러옵니다',
  error_TOO_MANY_ROOMS: '한 번에 열 수 있는 채팅방이 너무 많습니다. 하나를 닫고 다시 시도하세요',
  error_TIMEOUT: '서버의 응답이 없습니다',
};

const dictionaries: Record<Lang, Record<MessageKey, Entry>> = { en, ko };

export type TFunc = (key: MessageKey, params?: Record<string, string | number>) => string;

interface I18n {
  lang: Lang;
  setLang: (l: Lang) => void;
  t: TFunc;
}

const LANG_KEY = 'chattrio.lang';

export function detectLang(): Lang {
  try {
    const saved = localStorage.getItem(LANG_KEY);
    if (saved === 'en' || saved === 'ko') return saved;
  } catch {
    /* storage may be unavailable */
  }
  const nav = typeof navigator !== 'undefined' ? navigator.languages?.[0] ?? navigator.language : 'en';
  return nav && nav.toLowerCase().startsWith('ko') ? 'ko' : 'en';
}

const pluralRules: Partial<Record<Lang, Intl.PluralRules>> = {};

/** The form of a plural entry for the count `n` (CLDR rules: en has one/other, ko only other). */
function pluralForm(lang: Lang, forms: PluralForms, n: number): string {
  const rules = (pluralRules[lang] ??= new Intl.PluralRules(lang));
  return forms[rules.select(n)] ?? forms.other;
}

export function translate(lang: Lang, key: MessageKey, params?: Record<string, string | number>): string {
  const entry: Entry = dictionaries[lang][key] ?? en[key];
  const s = typeof entry === 'string' ? entry : pluralForm(lang, entry, Number(params?.n));
  if (!params) return s;
  return s.replace(/\{(\w+)\}/g, (m, k: string) => (k in params ? String(params[k]) : m));
}

const Ctx = createContext<I18n | null>(null);

export function I18nProvider({ children }: { children: ReactNode }) {
  const [lang, setLangState] = useState<Lang>(detectLang);
  const setLang = useCallback((l: Lang) => {
    setLangState(l);
    try {
      localStorage.setItem(LANG_KEY, l);
    } catch {
      /* ignore */
    }
  }, []);
  useEffect(() => {
    document.documentElement.lang = lang;
  }, [lang]);
  const value = useMemo<I18n>(
    () => ({ lang, setLang, t: (key, params) => translate(lang, key, params) }),
    [lang, setLang],
  );
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}

export function useI18n(): I18n {
  const v = useContext(Ctx);
  if (!v) throw new Error('I18nProvider missing');
  return v;
}

/** An ERROR's text in the viewer's language: known codes are translated, others keep the server's reason. */
export function describeError(t: TFunc, err: { code: string; message: string } | null | undefined): string {
  if (!err) return '?';
  const key = `error_${err.code}`;
  return key in en ? t(key as MessageKey) : err.message || err.code;
}
