import { defineConfig } from 'vitest/config';

const env = {
  AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  AWS_REGION: 'us-east-1',
  AWS_ACCESS_KEY_ID: 'test',
  AWS_SECRET_ACCESS_KEY: 'test',
  POWERTOOLS_DEV: 'false',
  POWERTOOLS_LOG_LEVEL: 'ERROR',
  POWERTOOLS_METRICS_DISABLED: 'true',
};

// Expected failure logs reach the output only for a failing test (test/support/quiet-logs.ts).
const setupFiles = ['test/support/quiet-logs.ts'];

export default defineConfig({
  test: {
    silent: 'passed-only',
    projects: [
      {
        test: { name: 'unit', include: ['test/unit/**/*.test.ts'], env, setupFiles },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          env,
          setupFiles,
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
      {
        test: {
          name: 'infra',
          include: ['test/infra/**/*.test.ts'],
          env,
          setupFiles,
          // Synthesizes the CDK app once (bundling every function) for all template tests.
          globalSetup: ['test/infra/global-setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 180_000,
        },
      },
      {
        test: {
          // Headless Chromium (apt-get install chromium) clicking through the demo page and sandboxes.
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          env,
          setupFiles,
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
