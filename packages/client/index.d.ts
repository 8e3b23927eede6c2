/**
 * @crm-oauth-broker/client: call Copper, Capsule CRM and Close through crm-oauth-broker.
 * Hand-written declarations for the plain ESM JavaScript in `lib/` (no build step); `lib/` is
 * checked against them by the repository's `npm run typecheck`. See docs/client.md.
 */
import type { LambdaClient } from '@aws-sdk/client-lambda';

export type ProviderId = 'copper' | 'capsule' | 'close';

export interface BrokerClientOptions {
  /** A Lambda client of your own (credentials, retries, timeouts); otherwise one is made from `endpoint` and `region`. */
  lambda?: LambdaClient;
  /**
   * The Lambda endpoint, e.g. `http://127.0.0.1:3000` for `npm start`. For a loopback endpoint the
   * client needs no AWS credentials (it signs with placeholder ones) and `region` defaults to `us-east-1`.
   * Unset: AWS's own endpoint for the region.
   */
  endpoint?: string;
  /** AWS region; unset: the SDK's default chain (`AWS_REGION`, the profile). */
  region?: string;
  /** Function names or ARNs, each overriding the one `functionPrefix` gives. */
  functionNames?: { tokenFetch?: string; crmRequest?: string };
  /**
   * The deployment's prefix: functions are named `<prefix>-token-fetch` and `<prefix>-crm-request`.
   * Default `crm-oauth-broker`, the stack's default, which the local server accepts too.
   */
  functionPrefix?: string;
  /** Clock in epoch milliseconds (tests); default `Date.now`. */
  now?: () => number;
  /** The `fetch` used to call the CRM in `client.fetch`; default `globalThis.fetch`. */
  fetch?: typeof globalThis.fetch;
}

/** `token-fetch`'s answer. */
export interface BrokerToken {
  readonly connectionId: string;
  readonly provider: ProviderId;
  readonly accessToken: string;
  readonly tokenType: 'Bearer';
  /** ISO-8601, or null for a token that does not expire (Copper). */
  readonly expiresAt: string | null;
  /** The CRM's API base, e.g. `https://api.close.com/api/v1`. */
  readonly apiBaseUrl: string;
  /** The headers the CRM's API needs, Authorization included. */
  readonly headers: Readonly<Record<string, string>>;
}

export interface GetTokenOptions {
  /** The tenant this call acts for; a connection of another owner is `ConnectionNotFound`. Pass it. */
  ownerId?: string;
  /** The token must stay valid this long (default 300, 0 to 86400). */
  minValiditySeconds?: number;
}

export type QueryValue = string | number | boolean;

export interface BrokerFetchInit extends RequestInit {
  /** As for `getToken`. */
  ownerId?: string;
  /** As for `getToken`. */
  minValiditySeconds?: number;
  /** Query parameters (never in `path`); an array value repeats the parameter. */
  query?: Readonly<Record<string, QueryValue | readonly QueryValue[]>>;
}

/** `crm-request`'s payload, less the connection id. */
export interface CrmRequest {
  ownerId?: string;
  /** Default `GET`. */
  method?: string;
  /** Relative to the connection's API base, e.g. `/me/`. */
  path: string;
  query?: Readonly<Record<string, string>>;
  headers?: Readonly<Record<string, string>>;
  body?: unknown;
  /** Retry this request after a 5xx or network error even though its method is not GET or HEAD. */
  idempotent?: boolean;
}

/** `crm-request`'s answer: the CRM's status whatever it is. */
export interface CrmAnswer {
  status: number;
  headers: Record<string, string>;
  /** Parsed JSON, a string, base64 of a binary body, or null; `bodyEncoding` says which. */
  body: unknown;
  bodyEncoding: 'json' | 'text' | 'base64' | 'none';
  /** The CRM's body was too large for a Lambda answer and was left out (`body: null`); the call did happen. */
  bodyTooLarge: boolean;
  /** Set when the answer is a 429 (from the CRM, or from the broker's shared budget for the CRM account). */
  retryAfterSeconds: number | null;
}

export interface BrokerClient {
  /**
   * A token for the connection, from the in-memory cache while it stays valid for
   * `minValiditySeconds`, else from `token-fetch`; concurrent calls for the same owner and
   * connection share one invocation.
   */
  getToken(connectionId: string, options?: GetTokenOptions): Promise<BrokerToken>;
  /**
   * Calls the CRM directly at `apiBaseUrl + path` with the token's headers. On a 401 it asks
   * `token-fetch` for a new token (sending the rejected token's SHA-256, so many callers cause one
   * refresh) and retries once. Resolves with the CRM's response whatever its status. Redirects are
   * not followed unless `init.redirect` says so.
   */
  fetch(connectionId: string, path: string, init?: BrokerFetchInit): Promise<Response>;
  /** Calls the CRM through `crm-request` (shared rate-limit budget, retries, 401 handling in the broker). */
  request(connectionId: string, request: CrmRequest): Promise<CrmAnswer>;
  /** Forgets cached tokens: one connection's (for every owner) or all. */
  clearCache(connectionId?: string): void;
  /** Forgets every cached token and closes the Lambda client if this client made it. */
  destroy(): void;
}

export function createBrokerClient(options?: BrokerClientOptions): BrokerClient;

/** The contract's error types. */
export type ErrorType =
  'InvalidRequest' | 'ConnectionNotFound' | 'NeedsReauth' | 'ProviderUnavailable' | 'BrokerUnavailable';

/**
 * Any failure of a broker call. `errorType` is Lambda's `errorType` (or, when the invocation itself
 * failed, the AWS SDK error's name, with that error as `cause`).
 */
export class BrokerError extends Error {
  constructor(errorType: string, message: string, options?: { cause?: unknown });
  readonly errorType: string;
}
export class InvalidRequest extends BrokerError {
  constructor(message?: string, options?: { cause?: unknown });
  readonly errorType: 'InvalidRequest';
}
export class ConnectionNotFound extends BrokerError {
  constructor(message?: string, options?: { cause?: unknown });
  readonly errorType: 'ConnectionNotFound';
}
export class NeedsReauth extends BrokerError {
  constructor(message?: string, options?: { cause?: unknown });
  readonly errorType: 'NeedsReauth';
}
export class ProviderUnavailable extends BrokerError {
  constructor(message?: string, options?: { cause?: unknown });
  readonly errorType: 'ProviderUnavailable';
}
export class BrokerUnavailable extends BrokerError {
  constructor(message?: string, options?: { cause?: unknown });
  readonly errorType: 'BrokerUnavailable';
}
