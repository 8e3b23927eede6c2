/**
 * The one table where the core's coded errors become responses: the HTTP
 * status of each refused browser step (an error page, or `?status=error` on
 * `returnTo`, which carries the code), and the HTTP status of each contract
 * `errorType` on the refresh route (invoked functions answer the `errorType`
 * itself, as Lambda does). The compiler keeps both tables complete.
 */
import type { ErrorType, FlowRefusal } from '../../core/domain/errors.ts';

export const flowStatus: Readonly<Record<FlowRefusal, 400 | 403 | 404 | 405 | 413 | 500 | 502>> = {
  invalid_session: 400,
  unknown_provider: 404,
  method_not_allowed: 405,
  invalid_request: 400,
  body_too_large: 413,
  invalid_state: 400,
  invalid_issuer: 400,
  // The person declined at the CRM.
  access_denied: 403,
  token_exchange_failed: 400,
  // The CRM answered the authorization request with an error of its own (RFC 6749 section 4.1.2.1).
  authorization_failed: 400,
  // The CRM failed or could not be reached: not the person's doing.
  provider_unavailable: 502,
  identity_failed: 502,
  internal_error: 500,
};

export const errorTypeStatus: Readonly<Record<ErrorType, 400 | 404 | 409 | 503>> = {
  InvalidRequest: 400,
  ConnectionNotFound: 404,
  NeedsReauth: 409,
  ProviderUnavailable: 503,
  BrokerUnavailable: 503,
};
