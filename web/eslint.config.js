// ESLint (flat config): typescript-eslint's recommended rules and React's rules of hooks over the
// client (src/), its unit tests (test/) and the e2e scripts (e2e/); `npm run lint`, run by `make test`.
//
// typescript-eslint needs TypeScript's JavaScript API, which TypeScript 7 (the native compiler)
// no longer has: package.json keeps TypeScript 6 under the name `typescript` for it, and
// `npm run typecheck` and `npm run build` run TypeScript 7's tsc (the `typescript7` alias).
import js from '@eslint/js';
import reactHooks from 'eslint-plugin-react-hooks';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/'] },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    rules: {
      // A leading underscore marks a binding kept for its position (a callback's signature).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['src/**/*.{ts,tsx}'],
    languageOptions: { globals: globals.browser },
    plugins: { 'react-hooks': reactHooks },
    rules: {
      'react-hooks/rules-of-hooks': 'error',
      'react-hooks/exhaustive-deps': 'error',
    },
  },
  {
    files: ['test/**/*.ts', '*.config.{js,ts}'],
    languageOptions: { globals: globals.node },
  },
  {
    // Node scripts that also hand functions to the browser (page.evaluate).
    files: ['e2e/**/*.mjs'],
    languageOptions: { globals: { ...globals.node, ...globals.browser } },
  },
);
