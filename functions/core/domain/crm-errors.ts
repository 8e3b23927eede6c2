/**
 * What a CRM's answers mean to the broker: the errors the CRM adapter raises
 * and the use cases interpret (RFC 6749 section 5.2; interface.md's table), and
 * how a call to the CRM may be retried.
 */
import { ProviderUnavailable } from './errors.ts';

/**
 * What a refused token request means, by RFC 6749 §5.2 and interface.md's table:
 * - `grant_dead`: 400/401 `invalid_grant`; the person must connect again;
 * - `client_rejected`: `invalid_client` / `unauthorized_client`; the broker's own
 *   credentials are wrong or revoked (an operator mistake, not the customer's grant);
 * - `request_rejected`: `invalid_request` / `unsupported_grant_type` / `invalid_scope`;
 *   the broker sent something the CRM does not take (a broker bug or a CRM change);
 * - `transient`: anything else (a WAF's 403 page, 404, 408, 425, ...): keep and retry later.
 */
export type TokenRefusal = 'grant_dead' | 'client_rejected' | 'request_rejected' | 'transient';

const REFUSALS: Readonly<Record<string, TokenRefusal>> = {
  invalid_grant: 'grant_dead',
  invalid_client: 'client_rejected',
  unauthorized_client: 'client_rejected',
  invalid_request: 'request_rejected',
  unsupported_grant_type: 'request_rejected',
  invalid_scope: 'request_rejected',
};

/** Only a 400 or 401 carrying an RFC 6749 `error` code says what went wrong; nothing else is trusted. */
export function classifyTokenRefusal(status: number, oauthError: string | undefined): TokenRefusal {
  if ((status !== 400 && status !== 401) || oauthError === undefined) return 'transient';
  return Object.hasOwn(REFUSALS, oauthError) ? (REFUSALS[oauthError] as TokenRefusal) : 'transient';
}

/** The token endpoint refused the request (RFC 6749 §5.2); `refusal` says what that means. */
export class TokenEndpointRejected extends Error {
  readonly refusal: TokenRefusal;
  constructor(
    readonly status: number,
    /** The RFC 6749 `error` code when the CRM sent one (`invalid_grant`, ...). */
    readonly oauthError: string | undefined,
  ) {
    super(`token endpoint refused the request (${status}${oauthError ? `, ${oauthError}` : ''})`);
    this.name = 'TokenEndpointRejected';
    this.refusal = classifyTokenRefusal(status, oauthError);
  }
}

/** The CRM refused an access token on an API call (401): the grant is dead. */
export class AccessTokenRejected extends Error {
  constructor(readonly status: number) {
    super(`CRM refused the access token (${status})`);
    this.name = 'AccessTokenRejected';
  }
}

/** The CRM answered, but not in a way we can use (unparseable, oversized): transient, never a dead grant. */
export class ProviderProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProviderProtocolError';
  }
}

/** No usable answer came, after the request may have reached the CRM: the CRM may have committed it. */
export class OutcomeUnknown extends ProviderUnavailable {
  constructor(options?: { cause?: unknown }) {
    super('The CRM may have processed the request, but its answer was lost', undefined, options);
  }
}

export interface RetryPolicy {
  /** Total attempts, the first included. */
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

/** How one request may be retried and for how long. */
export interface RequestLimits {
  /** Epoch ms: no attempt runs and no wait lasts past it (calls that cannot burn a grant). */
  deadline?: number;
  /** Epoch ms: no new attempt starts after it, but a started attempt gets its whole timeout (refreshes). */
  startAttemptsBy?: number;
  /** Timeout of one attempt; the client's default when absent. */
  timeoutMs?: number;
  /**
   * Retry after an answer lost once the request may have reached the CRM (a timeout, a connection
   * dropped after sending, a gateway's 502/504)? False for a refresh at a CRM that rotates refresh
   * tokens: the retry would present the token the CRM may just have rotated away (security.md row 18).
   */
  retryAmbiguous?: boolean;
}
