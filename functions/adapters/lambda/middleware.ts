/**
 * The one place errors become responses. Errors that say they may be shown
 * (`expose`) reach the caller; anything else is logged by name only and
 * becomes a generic 500 page or an `InternalError`, with no detail. Powertools'
 * middlewares add the Lambda context to the logger and flush the metrics
 * recorded during the invocation, after success and after an error alike.
 */
import middy from '@middy/core';
import type { Context } from 'aws-lambda';
import type { Logger } from '@aws-lambda-powertools/logger';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import { FlowError, contractError } from '../../core/domain/errors.ts';
import { flowStatus } from './error-table.ts';
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

/**
 * Logger context (and the `function` key) per invocation, and the metrics it recorded flushed
 * afterwards. Middy runs `onError` handlers last-registered first, so the error mapping registered
 * after these runs before `logMetrics` flushes. Never `logEvent`: events carry codes and tokens.
 */
const observe = <E, R>(
  { logger, metrics }: Observability,
  name: string,
): middy.MiddlewareObj<E, R, Error, Context>[] => [
  injectLambdaContext(logger, { logEvent: false }),
  { before: () => logger.appendKeys({ function: name }) },
  logMetrics(metrics.powertools),
];

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
    .use(observe<E, R>(deps, name))
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
    .use(observe<HttpEvent, HttpResult>(deps, name))
    .use({
      onError: (request) => {
        const err = request.error;
        if (err instanceof FlowError) {
          const statusCode = flowStatus[err.code];
          logger.info('flow refused', { errorCode: err.code, statusCode });
          if (statusCode >= 500) metrics.perFunction('UnexpectedFailures', name);
          request.response = err.returnTo
            ? redirect(returnToWith(err.returnTo, { status: 'error', error: err.code }))
            : errorPage(statusCode, err.code, err.message);
        } else {
          logger.error('unexpected failure', errorFields(err));
          metrics.perFunction('UnexpectedFailures', name);
          request.response = errorPage(
            500,
            'internal_error',
            'Something went wrong on our side. Please try again.',
          );
        }
      },
    })
    .handler(fn);
}
