/**
 * The refresh timeline: every timeout and budget that decides whether a refresh
 * can run to its end, in one place, so the invariants below can be checked
 * (test/unit/timeline.test.ts) and stated in the README ("Token lifecycle").
 *
 * The rule (interface.md, security.md row 18): once a refresh request has been
 * sent to the CRM, nothing of the broker's own cuts it short. A caller's
 * remaining time or a scheduler run's budget only decides whether to *start* a
 * refresh, or how long to keep *waiting* for someone else's. So:
 *
 * - every call after the point of no return has a bounded worst case;
 * - the lease outlasts the whole refresh, so nobody else can start one meanwhile;
 * - a refresh starts only when its worst case fits in the time its function has left.
 */

/** One attempt of a DynamoDB, KMS or Secrets Manager call (the SDK's `requestTimeout`). */
export const AWS_ATTEMPT_TIMEOUT_MS = 1_500;
/** Connecting to an AWS endpoint (the SDK's `connectionTimeout`). */
export const AWS_CONNECT_TIMEOUT_MS = 500;
/** Attempts of one AWS call, the first included (the SDK's `maxAttempts`). */
export const AWS_MAX_ATTEMPTS = 3;
/**
 * One AWS call, every SDK attempt and backoff included. The standard retry
 * strategy waits at most 0.2 s then 0.4 s (times jitter) between 3 attempts; 1 s is kept for that.
 */
export const AWS_CALL_MAX_MS = AWS_MAX_ATTEMPTS * (AWS_ATTEMPT_TIMEOUT_MS + AWS_CONNECT_TIMEOUT_MS) + 1_000;

/** One attempt at the CRM's token endpoint for a refresh: generous, since a slow CRM is not a dead one. */
export const REFRESH_ATTEMPT_TIMEOUT_MS = 20_000;
/** A further refresh attempt (after a 429, 500 or 503) starts only while a whole attempt still fits in this. */
export const REFRESH_CALL_MAX_MS = 25_000;
/** Storing a refresh result: write attempts start only while one more (write + re-read) fits in this. */
export const STORE_RESULT_MAX_MS = 3 * AWS_CALL_MAX_MS;
/** One attempt at storing a refresh result: the conditional write, and a re-read when its condition failed. */
export const STORE_ATTEMPT_MAX_MS = 2 * AWS_CALL_MAX_MS;

/** From the moment the refresh request is sent: the call, encrypting the answer, storing it. */
export const AFTER_SEND_MAX_MS = REFRESH_CALL_MAX_MS + AWS_CALL_MAX_MS + STORE_RESULT_MAX_MS;
/** Before it is sent, holding the lease: decrypting the stored tokens, reading the client secret. */
export const BEFORE_SEND_MAX_MS = 2 * AWS_CALL_MAX_MS;
/** A whole refresh from taking the lease to releasing it with the result stored. */
export const REFRESH_MAX_MS = AWS_CALL_MAX_MS + BEFORE_SEND_MAX_MS + AFTER_SEND_MAX_MS;

/** How long a refresh lease is held at most; a crashed holder's lease lapses after it. */
export const LEASE_MS = 90_000;
/** A refresh request is sent only if its worst case ends this long before the lease lapses. */
export const LEASE_SAFETY_MS = 5_000;

/** Kept back from a function's remaining time to answer and report. */
export const ANSWER_MARGIN_MS = 2_000;

/** Epoch ms by which a function must be done: its remaining time less the answer margin. */
export const functionDeadline = (now: number, remainingMs: number | undefined): number | undefined =>
  remainingMs === undefined ? undefined : now + remainingMs - ANSWER_MARGIN_MS;

/** How long a connect result waits for the app's confirmation before it is discarded and revoked. */
export const PENDING_TTL_MS = 10 * 60_000;
