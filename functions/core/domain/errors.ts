/**
 * Typed errors. The `name` of an error thrown from an invoked function becomes
 * Lambda's `errorType`, so callers (SDK, Step Functions) can branch on it.
 * Messages never contain a token, code, state, cookie or secret.
 */

export type ErrorType =
  'InvalidRequest' | 'ConnectionNotFound' | 'NeedsReauth' | 'ProviderUnavailable' | 'BrokerUnavailable';

/** An error a service caller may see: its `name` is the contract's `errorType`, its message holds no secret. */
export class BrokerError extends Error {
  constructor(
    readonly errorType: ErrorType,
    message: string,
    /** A short machine-readable code for redirects (`?error=<code>`) and logs. */
    readonly code: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = errorType;
  }
}

export class InvalidRequest extends BrokerError {
  constructor(message: string, code = 'invalid_request', options?: { cause?: unknown }) {
    super('InvalidRequest', message, code, options);
  }
}

export class ConnectionNotFound extends BrokerError {
  constructor(message = 'No such connection', options?: { cause?: unknown }) {
    super('ConnectionNotFound', message, 'connection_not_found', options);
  }
}

export class NeedsReauth extends BrokerError {
  constructor(
    message = 'The CRM rejected the grant; the person must connect again',
    options?: { cause?: unknown },
  ) {
    super('NeedsReauth', message, 'needs_reauth', options);
  }
}

export class ProviderUnavailable extends BrokerError {
  constructor(
    message = 'The CRM is failing or rate-limiting; retry later',
    /** Seconds the CRM asked us to wait (429/503 `Retry-After`), when it said. */
    readonly retryAfterSeconds?: number,
    options?: { cause?: unknown },
  ) {
    super('ProviderUnavailable', message, 'provider_unavailable', options);
  }
}

/**
 * The broker's own dependencies are failing: the table or the key service is
 * throttled or unreachable, or the CRM refuses the broker's client credentials.
 * The connection is untouched; retry later.
 */
export class BrokerUnavailable extends BrokerError {
  constructor(
    message = "The broker's own dependencies are failing; retry later",
    options?: { cause?: unknown },
  ) {
    super('BrokerUnavailable', message, 'broker_unavailable', options);
  }
}

/**
 * Did an AWS SDK call fail (throttled, timed out, unreachable, a service error)?
 * Every error that leaves an SDK client's `send` carries `$metadata` (the retry
 * middleware adds it, with the attempts made) or `$fault`.
 */
export function isDependencyFailure(err: unknown): boolean {
  return (
    typeof err === 'object' &&
    err !== null &&
    !(err instanceof BrokerError) &&
    ('$metadata' in err || '$fault' in err) &&
    // A failed condition is an answer the code must handle, not a failing dependency.
    (err as { name?: unknown }).name !== 'ConditionalCheckFailedException'
  );
}

/** The contract's error for a failure, where it has one: a broker error as it is, an AWS failure as `BrokerUnavailable`. */
export function contractError(err: unknown): BrokerError | undefined {
  if (err instanceof BrokerError) return err;
  if (isDependencyFailure(err)) return new BrokerUnavailable(undefined, { cause: err });
  return undefined;
}

/** Why a browser step was refused; the Lambda adapter's error table gives each its HTTP status. */
export type FlowRefusal =
  | 'invalid_session'
  | 'unknown_provider'
  | 'method_not_allowed'
  | 'invalid_request'
  | 'body_too_large'
  | 'invalid_state'
  | 'invalid_issuer'
  | 'access_denied'
  | 'authorization_failed'
  | 'token_exchange_failed'
  | 'provider_unavailable'
  | 'identity_failed'
  | 'internal_error';

/**
 * A refused browser step (bad state, declined consent, ...), shown to the
 * person as an error page or as `?status=error&error=<code>` on `returnTo`.
 * The message is for the person: it never holds a token, code, state or secret.
 */
export class FlowError extends Error {
  readonly code: FlowRefusal;
  /** Where the person should be sent back, once it is known (after the state was consumed). */
  readonly returnTo: string | undefined;
  constructor(
    code: FlowRefusal,
    message: string,
    options: { returnTo?: string | undefined; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = 'FlowError';
    this.code = code;
    this.returnTo = options.returnTo;
  }
}

/** A misconfiguration found at cold start: fail init, not the thousandth request. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}
