/**
 * The one place errors become responses. Errors that say they may be shown
 * (`expose`) reach the caller; anything else is logged by name only and
 * becomes a generic 500 page or an `InternalError`, with no detail. Metrics
 * recorded during the invocation are flushed here too.
 */
import middy from '@middy/core';
import type { Context } from 'aws-lambda';
import type { Logger } from '@aws-lambda-powertools/logger';
import { FlowError, contractError } from '../../core/domain/errors.ts';
import { type HttpEvent, type HttpResult, errorPage, redirect, returnToWith } from './responses.ts';
import { errorFields } from './logger.ts';
import type { BrokerMetrics } from './metrics.ts';

export class InternalError extends Error {
  constructor() {
    super('Internal error');
    this.name = 'InternalError';
  }
}

interface Observability {
  logger: Logger;
  metrics: BrokerMetrics;
}

const observe = (
  { logger, metrics }: Observability,
  name: string,
): middy.MiddlewareObj<unknown, unknown, Error, Context> => ({
  before: (request) => {
    logger.addContext(request.context);
    logger.appendKeys({ function: name });
  },
  after: () => metrics.flush(),
});

/**
 * For functions other services invoke: typed errors pass through, a failing AWS dependency becomes
 * `BrokerUnavailable`, anything else `InternalError`.
 */
export function invokeHandler<E, R>(
  deps: Observability,
  name: string,
  fn: (event: E, context: Context) => Promise<R>,
) {
  const { logger, metrics } = deps;
  return middy<E, R, Error, Context>()
    .use(observe(deps, name) as middy.MiddlewareObj<E, R, Error, Context>)
    .use({
      onError: (request) => {
        const typed = contractError(request.error);
        if (typed) {
          // A failing AWS dependency is the contract's BrokerUnavailable (retry later), logged as such.
          if (typed !== request.error) logger.warn('dependency failed', errorFields(request.error));
          logger.info('request refused', { errorType: typed.errorType, errorCode: typed.code });
          metrics.perFunction('RequestsRefused', name);
          request.error = typed;
        } else {
          logger.error('unexpected failure', errorFields(request.error));
          metrics.perFunction('UnexpectedFailures', name);
          request.error = new InternalError();
        }
        metrics.flush();
      },
    })
    .handler(fn);
}

/** For the public browser routes: refused steps become a 4xx page (or a redirect to `returnTo`), the rest a 500 page. */
export function httpHandler(
  deps: Observability,
  name: string,
  fn: (event: HttpEvent, context: Context) => Promise<HttpResult>,
) {
  const { logger, metrics } = deps;
  return middy<HttpEvent, HttpResult, Error, Context>()
    .use(observe(deps, name) as middy.MiddlewareObj<HttpEvent, HttpResult, Error, Context>)
    .use({
      onError: (request) => {
        const err = request.error;
        if (err instanceof FlowError) {
          logger.info('flow refused', { errorCode: err.code, statusCode: err.statusCode });
          if (err.statusCode >= 500) metrics.perFunction('UnexpectedFailures', name);
          request.response = err.returnTo
            ? redirect(returnToWith(err.returnTo, { status: 'error', error: err.code }))
            : errorPage(err.statusCode, err.code, err.message);
        } else {
          logger.error('unexpected failure', errorFields(err));
          metrics.perFunction('UnexpectedFailures', name);
          request.response = errorPage(
            500,
            'internal_error',
            'Something went wrong on our side. Please try again.',
          );
        }
        metrics.flush();
      },
    })
    .handler(fn);
}
