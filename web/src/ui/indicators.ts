/** The texts of the unread badge and the typing line: pure functions of the counts. */
import type { TFunc } from '../i18n';
import { UNREAD_CAP, type ChatMessage } from '../protocol/types';

/** What the badge shows ("99+" from the cap on) and what a screen reader says; null: no badge. */
export function unreadBadge(t: TFunc, unread: number | undefined): { text: string; label: string } | null {
  if (!unread || unread <= 0) return null;
  if (unread >= UNREAD_CAP) return { text: `${UNREAD_CAP - 1}+`, label: t('unreadMany') };
  return { text: String(unread), label: t('unreadLabel', { n: unread }) };
}

/** "alice is typing…", "alice and 2 others are typing…"; empty when nobody types. */
export function typingText(t: TFunc, users: readonly string[]): string {
  if (users.length === 0) return '';
  if (users.length === 1) return t('typingOne', { user: users[0] });
  return t('typingMany', { user: users[0], n: users.length - 1 });
}

/** The first message the divider goes before: the first chat message of another user after the
 * read position; null when there is none (or no position: a room never read shows no divider). */
export function firstUnread(messages: readonly ChatMessage[], lastReadSeq: number | null, userId: string): ChatMessage | null {
  if (lastReadSeq === null) return null;
  return messages.find((m) => m.seq > lastReadSeq && m.kind === 'chat' && m.senderId !== userId) ?? null;
}
