/**
 * Settings every AWS SDK client of the broker is built with (DynamoDB, KMS,
 * Secrets Manager, EventBridge): without a request timeout a hanging call could
 * outlive the refresh lease and let a second refresher reuse a rotated-away
 * token (timeline.ts, security.md row 18).
 */
import { AWS_ATTEMPT_TIMEOUT_MS, AWS_CONNECT_TIMEOUT_MS, AWS_MAX_ATTEMPTS } from '../core/domain/timeline.ts';

export const awsClientOptions = (endpoint?: string) => ({
  maxAttempts: AWS_MAX_ATTEMPTS,
  requestHandler: {
    connectionTimeout: AWS_CONNECT_TIMEOUT_MS,
    requestTimeout: AWS_ATTEMPT_TIMEOUT_MS,
    // Without it the handler only logs a warning when `requestTimeout` passes and keeps waiting.
    throwOnRequestTimeout: true,
  },
  ...(endpoint ? { endpoint } : {}),
});
