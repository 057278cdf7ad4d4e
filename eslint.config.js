import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', '.cache/', 'bench/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  { languageOptions: { globals: globals.node } },
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      // Only src/sys may touch the native boundary.
      'no-restricted-imports': ['error', { paths: [{ name: 'ffi-rs', message: 'Only src/sys/ may import ffi-rs.' }] }],
    },
  },
  {
    files: ['src/sys/**/*.ts'],
    rules: { 'no-restricted-imports': 'off' },
  },
  {
    files: ['src/daemon/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        paths: [{ name: 'ffi-rs', message: 'Only src/sys/ may import ffi-rs.' }],
        patterns: [{ group: ['**/cli/**', '../cli/*'], message: 'Daemon code never imports CLI code.' }],
      }],
    },
  },
);
