/**
 * `refresh`: forces a refresh and returns the new expiry, never the token.
 * Reached as `POST /connections/{connectionId}/refresh` (IAM-authorized in AWS;
 * optional JSON body `{ "ownerId": "..." }`) or by Lambda Invoke with
 * `{ "connectionId": "...", "ownerId"?: "..." }`.
 */
import type { Context } from 'aws-lambda';
import { type BrokerDeps, lambdaHandler } from './adapters/lambda/wiring.ts';
import { InvalidRequest, contractError } from './core/domain/errors.ts';
import { audited } from './adapters/lambda/audit.ts';
import { errorTypeStatus } from './adapters/lambda/error-table.ts';
import type { HttpResult } from './adapters/lambda/responses.ts';
import { invokeHandler } from './adapters/lambda/middleware.ts';
import { fetchToken } from './core/use-cases/fetch-token.ts';
import { functionDeadline } from './core/domain/timeline.ts';
import * as v from './adapters/lambda/validate.ts';

interface HttpLikeEvent {
  requestContext?: { http?: { method?: string } };
  pathParameters?: Record<string, string | undefined>;
  body?: string;
  isBase64Encoded?: boolean;
}

/** The route's optional JSON body: `{ "ownerId": "..." }`. */
function routeBody(event: HttpLikeEvent): { ownerId?: unknown } {
  if (!event.body) return {};
  const text = event.isBase64Encoded ? Buffer.from(event.body, 'base64').toString('utf8') : event.body;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new InvalidRequest('the body must be a JSON object such as { "ownerId": "..." }');
  }
  return v.objectPayload(parsed, ['ownerId']);
}

const isHttpEvent = (event: unknown): event is HttpLikeEvent =>
  typeof (event as HttpLikeEvent | null)?.requestContext?.http?.method === 'string';

const json = (statusCode: number, body: unknown): HttpResult => ({
  statusCode,
  headers: { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' },
  body: JSON.stringify(body),
});

export const createHandler = (deps: BrokerDeps) => {
  const force = async (payload: { connectionId?: unknown; ownerId?: unknown }, context: Context) => {
    const deadline = functionDeadline(deps.now(), context.getRemainingTimeInMillis?.());
    const request = {
      connectionId: v.connectionId(payload.connectionId),
      ownerId: v.optionalOwnerId(payload.ownerId),
      minValiditySeconds: 0,
      forceRefresh: true,
      ...(deadline ? { deadline } : {}),
    };
    const access = { connectionId: request.connectionId, ownerIdGiven: request.ownerId !== undefined };
    const answer = await audited(deps, 'refresh', access, () => fetchToken(deps, request));
    return { connectionId: answer.connectionId, expiresAt: answer.expiresAt };
  };
  return invokeHandler(deps, 'refresh', async (event: unknown, context: Context) => {
    if (!isHttpEvent(event)) return force(v.objectPayload(event, ['connectionId', 'ownerId']), context);
    // HTTP route: typed errors become JSON with a status; the error types are the same as for invoke.
    try {
      const body = routeBody(event);
      return json(200, await force({ connectionId: event.pathParameters?.connectionId, ...body }, context));
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
