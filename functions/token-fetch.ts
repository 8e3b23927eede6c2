/**
 * `token-fetch` (Lambda Invoke): a valid access token for a connection, with the
 * headers and API base URL its CRM needs; refreshed first when it would not stay
 * valid for `minValiditySeconds`, on `forceRefresh`, or when `rejectedTokenSha256` names the
 * stored token (the CRM just answered 401 to it). Never the refresh token.
 */
import type { Context } from 'aws-lambda';
import { type BrokerDeps, lambdaHandler } from './adapters/lambda/wiring.ts';
import { audited } from './adapters/lambda/audit.ts';
import { invokeHandler } from './adapters/lambda/middleware.ts';
import { fetchToken } from './core/use-cases/fetch-token.ts';
import { functionDeadline } from './core/domain/timeline.ts';
import * as v from './adapters/lambda/validate.ts';

export const createHandler = (deps: BrokerDeps) =>
  invokeHandler(deps, 'token-fetch', async (event: unknown, context: Context) => {
    const payload = v.objectPayload(event, [
      'connectionId',
      'ownerId',
      'minValiditySeconds',
      'forceRefresh',
      'rejectedTokenSha256',
    ]);
    const started = deps.now();
    const deadline = functionDeadline(started, context.getRemainingTimeInMillis?.());
    const request = {
      connectionId: v.connectionId(payload.connectionId),
      ownerId: v.optionalOwnerId(payload.ownerId),
      minValiditySeconds: v.integer(payload.minValiditySeconds, 'minValiditySeconds', 300, 0, 86_400),
      forceRefresh: v.boolean(payload.forceRefresh, 'forceRefresh', false),
      rejectedTokenSha256: v.optionalSha256(payload.rejectedTokenSha256, 'rejectedTokenSha256'),
      ...(deadline ? { deadline } : {}),
    };
    const access = { connectionId: request.connectionId, ownerIdGiven: request.ownerId !== undefined };
    const answer = await audited(deps, 'token-fetch', access, () => fetchToken(deps, request));
    deps.metrics.milliseconds('TokenFetchLatency', deps.now() - started);
    return answer;
  });

export const handler = lambdaHandler('token-fetch', createHandler);
