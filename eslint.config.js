import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

/** `no-restricted-imports` patterns that keep the arrows of the architecture pointing one way. */
const forbid = (groups, message) => ({ group: groups, message });
const AWS_AND_LAMBDA = ['@aws-sdk/*', '@smithy/*', '@aws-lambda-powertools/*', '@middy/*', 'aws-lambda'];

export default tseslint.config(
  { ignores: ['node_modules', 'cdk.out', '.data', 'coverage', 'test-results', 'bench/results'] },
  js.configs.recommended,
  { languageOptions: { globals: { ...globals.node } } },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-console': ['error', { allow: ['warn', 'error'] }],
    },
  },
  {
    // Type-aware rules that catch real bugs here: a promise nobody awaits (a refresh result never
    // stored, an event never published), a promise where a boolean or a void callback is expected,
    // and a switch that forgets a case of a union (an error type, a refusal class).
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': [
        'error',
        { considerDefaultExhaustiveForUnions: true, requireDefaultForNonUnion: false },
      ],
    },
  },
  {
    // The core (use cases, domain rules, ports) knows no AWS, no Lambda and no adapter.
    files: ['functions/core/**'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            forbid(
              ['**/adapters/**', '**/manifest/**', '../../*.ts'],
              'core imports only core: add a port instead',
            ),
            forbid(AWS_AND_LAMBDA, 'core knows no AWS or Lambda: that belongs in an adapter'),
          ],
        },
      ],
    },
  },
  {
    // Domain rules are pure: no use case, no port.
    files: ['functions/core/domain/**'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            forbid(
              ['**/adapters/**', '**/manifest/**', '**/use-cases/**', '**/ports.ts'],
              'domain imports only domain',
            ),
            forbid(AWS_AND_LAMBDA, 'core knows no AWS or Lambda: that belongs in an adapter'),
          ],
        },
      ],
    },
  },
  {
    // Adapters serve the core; they never call a handler.
    files: ['functions/adapters/**'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            forbid(
              ['../../*.ts', '../../../local/**', '../../../infra/**'],
              'adapters import core, manifest and adapters',
            ),
          ],
        },
      ],
    },
  },
  {
    // The manifest is data: it reads only pure domain modules.
    files: ['manifest/**'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            forbid(
              ['**/adapters/**', '**/use-cases/**', '**/ports.ts', '**/local/**', '**/infra/**'],
              'the manifest reads only core/domain',
            ),
            {
              group: ['@aws-sdk/*'],
              allowTypeImports: true,
              message: 'the manifest may name SDK types only',
            },
          ],
        },
      ],
    },
  },
  {
    // infra/ deploys what the manifest declares; it imports nothing else of the broker.
    files: ['infra/**'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            forbid(
              ['**/functions/**', '**/local/**', '**/test/**', '**/bench/**'],
              'infra imports only the manifest and infra',
            ),
          ],
        },
      ],
    },
  },
  {
    files: ['local/**', 'examples/**', 'bench/**', 'test/**', 'infra/**', '.ci/**'],
    rules: { 'no-console': 'off' },
  },
  {
    // Tests read untyped JSON answers and send hostile input on purpose.
    files: ['test/**'],
    rules: { '@typescript-eslint/no-explicit-any': 'off', 'no-control-regex': 'off' },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    // The client library is plain JavaScript checked by tsc (`// @ts-check`, JSDoc): the same
    // promise rules as the TypeScript.
    files: ['packages/client/lib/**/*.js'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
    },
  },
);
