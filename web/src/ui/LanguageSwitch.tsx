import { useI18n, type Lang } from '../i18n';

export function LanguageSwitch() {
  const { lang, setLang, t } = useI18n();
  return (
    <select
      className="lang-switch"
      value={lang}
      onChange={(e) => setLang(e.target.value as Lang)}
      aria-label={t('language')}
      data-testid="lang"
    >
      <option value="en" lang="en">
        English
      </option>
      <option value="ko" lang="ko">
        한국어
      </option>
    </select>
  );
}
