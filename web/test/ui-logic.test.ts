import { describe, expect, it } from 'vitest';
import { translate } from '../src/i18n';
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
