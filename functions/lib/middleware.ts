/**
 * The one place errors become responses. Errors that say they may be shown
 * (`expose`) reach the caller; anything else is logged by name only and
 * becomes a generic 500 page or an `InternalError`, with no detail.
 */
import middy from '@middy/core';
import type { Context } from 'aws-lambda';
import type { Logger } from '@aws-lambda-powertools/logger';
import { BrokerError, FlowError } from './errors.ts';
import { type HttpEvent, type HttpResult, errorPage, redirect, returnToWith } from './http.ts';
import { errorFields } from './logger.ts';

export class InternalError extends Error {
  constructor() {
    super('Internal error');
    this.name = 'InternalError';
  }
}

/** For functions other services invoke: typed errors pass through, the rest become `InternalError`. */
export function invokeHandler<E, R>(
  logger: Logger,
  name: string,
  fn: (event: E, context: Context) => Promise<R>,
) {
  return middy<E, R, Error, Context>()
    .use({
      before: (request) => {
        logger.addContext(request.context);
        logger.appendKeys({ function: name });
      },
      onError: (request) => {
        if (request.error instanceof BrokerError) {
          logger.info('request refused', {
            errorType: request.error.errorType,
            errorCode: request.error.code,
          });
          return;
        }
        logger.error('unexpected failure', errorFields(request.error));
        request.error = new InternalError();
      },
    })
    .handler(fn);
}

/** For the public browser routes: refused steps become a 4xx page (or a redirect to `returnTo`), the rest a 500 page. */
export function httpHandler(
  logger: Logger,
  name: string,
  fn: (event: HttpEvent, context: Context) => Promise<HttpResult>,
) {
  return middy<HttpEvent, HttpResult, Error, Context>()
    .use({
      before: (request) => {
        logger.addContext(request.context);
        logger.appendKeys({ function: name });
      },
      onError: (request) => {
        const err = request.error;
        if (err instanceof FlowError) {
          logger.info('flow refused', { errorCode: err.code, statusCode: err.statusCode });
          request.response = err.returnTo
            ? redirect(returnToWith(err.returnTo, { status: 'error', error: err.code }))
            : errorPage(err.statusCode, err.code, err.message);
          return;
        }
        logger.error('unexpected failure', errorFields(err));
        request.response = errorPage(
          500,
          'internal_error',
          'Something went wrong on our side. Please try again.',
        );
      },
    })
    .handler(fn);
}
