// @ts-check
/**
 * The broker's failures as classes: `name` is the contract's `errorType`, so callers branch with
 * `instanceof` or on `err.name`, as they would on Lambda's `errorType`. Messages are the broker's,
 * which never carry a token.
 */

/** Any failure of a broker call; `errorType` is what Lambda reported (or the SDK error's name). */
export class BrokerError extends Error {
  /**
   * @param {string} errorType
   * @param {string} message
   * @param {{ cause?: unknown }} [options]
   */
  constructor(errorType, message, options) {
    super(message, options);
    this.name = 'BrokerError';
    /** @type {string} */
    this.errorType = errorType;
  }
}

/** The payload is malformed (or, in `fetch`, the path would leave the CRM's API base). */
export class InvalidRequest extends BrokerError {
  /** @param {string} [message] @param {{ cause?: unknown }} [options] */
  constructor(message = 'The request is malformed', options) {
    super('InvalidRequest', message, options);
    this.name = 'InvalidRequest';
  }
}

/** No such connection, it was deleted, or it is not this owner's. */
export class ConnectionNotFound extends BrokerError {
  /** @param {string} [message] @param {{ cause?: unknown }} [options] */
  constructor(message = 'No such connection', options) {
    super('ConnectionNotFound', message, options);
    this.name = 'ConnectionNotFound';
  }
}

/** The CRM rejected the grant: the person must connect again. */
export class NeedsReauth extends BrokerError {
  /** @param {string} [message] @param {{ cause?: unknown }} [options] */
  constructor(message = 'The CRM rejected the grant; the person must connect again', options) {
    super('NeedsReauth', message, options);
    this.name = 'NeedsReauth';
  }
}

/** The CRM is failing or rate-limiting: retry later. */
export class ProviderUnavailable extends BrokerError {
  /** @param {string} [message] @param {{ cause?: unknown }} [options] */
  constructor(message = 'The CRM is failing or rate-limiting; retry later', options) {
    super('ProviderUnavailable', message, options);
    this.name = 'ProviderUnavailable';
  }
}

/** The broker's own dependencies are failing: retry later. */
export class BrokerUnavailable extends BrokerError {
  /** @param {string} [message] @param {{ cause?: unknown }} [options] */
  constructor(message = "The broker's own dependencies are failing; retry later", options) {
    super('BrokerUnavailable', message, options);
    this.name = 'BrokerUnavailable';
  }
}

const byType = { InvalidRequest, ConnectionNotFound, NeedsReauth, ProviderUnavailable, BrokerUnavailable };

/**
 * The error for a Lambda function error: the contract's class for its `errorType`, else a
 * `BrokerError` carrying the raw type (a bug in the broker, a Lambda timeout, a runtime crash).
 * @param {string} errorType
 * @param {string} message
 * @returns {BrokerError}
 */
export function errorFor(errorType, message) {
  const known = Object.hasOwn(byType, errorType)
    ? byType[/** @type {keyof typeof byType} */ (errorType)]
    : null;
  return known ? new known(message) : new BrokerError(errorType, message);
}
