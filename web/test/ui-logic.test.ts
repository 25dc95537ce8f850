import { describe, expect, it } from 'vitest';
import protocolDoc from '../../docs/protocol.md?raw';
import { describeError, translate, type MessageKey } from '../src/i18n';
import { parseRoute } from '../src/router';
import { makeSession } from '../src/session';
import { validateRoomName } from '../src/ui/CreateRoomDialog';
import { textLength } from '../src/protocol/client';
import { takeFragmentToken } from '../src/ui/Login';

describe('room name validation', () => {
  it('trims and counts code points, 1..100', () => {
    expect(validateRoomName('   ')).toEqual({ ok: false, reason: 'empty', n: 0 });
    expect(validateRoomName('  general ')).toEqual({ ok: true });
    expect(validateRoomName('x'.repeat(100))).toEqual({ ok: true });
    expect(validateRoomName('x'.repeat(101))).toMatchObject({ ok: false, reason: 'long', n: 101 });
    expect(validateRoomName('😀'.repeat(100))).toEqual({ ok: true });
  });
});

describe('i18n', () => {
  it('fills parameters in both languages', () => {
    expect(translate('en', 'joined', { user: 'alice' })).toBe('alice joined');
    expect(translate('ko', 'joined', { user: 'alice' })).toBe('alice님이 들어왔습니다');
    expect(translate('en', 'charCount', { n: 3, max: 4000 })).toBe('3 of 4000 characters');
  });
});

describe('plurals (Intl.PluralRules)', () => {
  it('picks one/other in English', () => {
    expect(translate('en', 'peopleLabel', { n: 1 })).toBe('1 person in the room');
    expect(translate('en', 'peopleLabel', { n: 0 })).toBe('0 people in the room');
    expect(translate('en', 'peopleLabel', { n: 2 })).toBe('2 people in the room');
    expect(translate('en', 'tooLong', { n: 1 })).toBe('Too long by 1 character');
    expect(translate('en', 'tooLong', { n: 7 })).toBe('Too long by 7 characters');
  });

  it('has one form in Korean', () => {
    expect(translate('ko', 'peopleLabel', { n: 1 })).toBe('방에 1명 있음');
    expect(translate('ko', 'peopleLabel', { n: 5 })).toBe('방에 5명 있음');
  });
});

describe('error codes', () => {
  const t = (lang: 'en' | 'ko') => (key: MessageKey, params?: Record<string, string | number>) => translate(lang, key, params);

  it('are translated in both languages', () => {
    const err = { code: 'BAD_TEXT', message: 'text must not be only white space' };
    expect(describeError(t('en'), err)).toMatch(/^the text is not allowed/);
    expect(describeError(t('ko'), err)).toMatch(/^보낼 수 없는 내용입니다/);
    expect(describeError(t('ko'), { code: 'UNAVAILABLE', message: 'kafka down' })).toMatch(/다시 시도하세요$/);
  });

  it('cover every ERROR code of docs/protocol.md in both languages', () => {
    const section = protocolDoc.slice(protocolDoc.indexOf('### Errors'), protocolDoc.indexOf('After an `ERROR`'));
    const codes = [...section.matchAll(/`([A-Z][A-Z_]+)`/g)].map((m) => m[1]).filter((c) => !['SEND', 'SUBSCRIBE'].includes(c)); // frame names in the text
    expect(codes).toContain('TOO_MANY_ROOMS');
    for (const code of codes) {
      for (const lang of ['en', 'ko'] as const) {
        expect(describeError(t(lang), { code, message: 'the server reason' }), `${code} in ${lang}`).not.toBe('the server reason');
      }
    }
  });

  it('unknown codes keep the server reason', () => {
    expect(describeError(t('ko'), { code: 'SOMETHING_NEW', message: 'why' })).toBe('why');
  });
});

describe('routes', () => {
  it('parses the room path and falls back to home', () => {
    expect(parseRoute('/room/42')).toEqual({ name: 'room', roomId: 42 });
    expect(parseRoute('/room/42/')).toEqual({ name: 'room', roomId: 42 });
    expect(parseRoute('/')).toEqual({ name: 'home' });
    expect(parseRoute('/room/abc')).toEqual({ name: 'home' });
  });
});

describe('session', () => {
  it('normalises expiresAt to unix seconds', () => {
    expect(makeSession('a', 't', 1764072000).expiresAt).toBe(1764072000);
    expect(makeSession('a', 't', 1764072000123).expiresAt).toBe(1764072000);
    expect(makeSession('a', 't', '2025-11-25T12:00:00Z').expiresAt).toBe(1764072000);
    expect(makeSession('a', 't', null).expiresAt).toBeNull();
  });
});

describe('textLength', () => {
  it('counts code points like the server', () => {
    expect(textLength('abc')).toBe(3);
    expect(textLength('😀😀')).toBe(2);
    expect(textLength('한국어')).toBe(3);
  });
});

describe('token handed over in the URL fragment', () => {
  it('is taken and removed from the address bar', () => {
    const replaced: string[] = [];
    const token = takeFragmentToken({ hash: '#token=eyJ.abc.def' }, (url) => replaced.push(url), '/room/4');
    expect(token).toBe('eyJ.abc.def');
    expect(replaced).toEqual(['/room/4']);
  });

  it('leaves an address without one alone', () => {
    const replaced: string[] = [];
    expect(takeFragmentToken({ hash: '' }, (url) => replaced.push(url), '/')).toBeNull();
    expect(takeFragmentToken({ hash: '#other=1' }, (url) => replaced.push(url), '/')).toBeNull();
    expect(replaced).toEqual([]);
  });
});
