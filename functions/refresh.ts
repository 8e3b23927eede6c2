/**
 * `refresh`: forces a refresh and returns the new expiry, never the token.
 * Reached as `POST /connections/{connectionId}/refresh` (IAM-authorized in AWS)
 * or by Lambda Invoke with `{ "connectionId": "..." }`.
 */
import type { Context } from 'aws-lambda';
import { type BrokerDeps, lambdaHandler } from './adapters/lambda/wiring.ts';
import { contractError } from './core/domain/errors.ts';
import { errorTypeStatus } from './adapters/lambda/error-table.ts';
import type { HttpResult } from './adapters/lambda/responses.ts';
import { invokeHandler } from './adapters/lambda/middleware.ts';
import { fetchToken } from './core/use-cases/fetch-token.ts';
import { functionDeadline } from './core/domain/timeline.ts';
import * as v from './adapters/lambda/validate.ts';

interface HttpLikeEvent {
  requestContext?: { http?: { method?: string } };
  pathParameters?: Record<string, string | undefined>;
}

const isHttpEvent = (event: unknown): event is HttpLikeEvent =>
  typeof (event as HttpLikeEvent | null)?.requestContext?.http?.method === 'string';

const json = (statusCode: number, body: unknown): HttpResult => ({
  statusCode,
  headers: { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' },
  body: JSON.stringify(body),
});

export const createHandler = (deps: BrokerDeps) => {
  const force = async (connectionId: unknown, context: Context) => {
    const deadline = functionDeadline(deps.now(), context.getRemainingTimeInMillis?.());
    const answer = await fetchToken(deps, {
      connectionId: v.connectionId(connectionId),
      minValiditySeconds: 0,
      forceRefresh: true,
      ...(deadline ? { deadline } : {}),
    });
    return { connectionId: answer.connectionId, expiresAt: answer.expiresAt };
  };
  return invokeHandler(deps, 'refresh', async (event: unknown, context: Context) => {
    if (!isHttpEvent(event)) return force(v.objectPayload(event, ['connectionId']).connectionId, context);
    // HTTP route: typed errors become JSON with a status; the error types are the same as for invoke.
    try {
      return json(200, await force(event.pathParameters?.connectionId, context));
    } catch (err) {
      const typed = contractError(err);
      if (!typed) throw err;
      return json(errorTypeStatus[typed.errorType], {
        errorType: typed.errorType,
        errorMessage: typed.message,
      });
    }
  });
};

export const handler = lambdaHandler('refresh', createHandler);
