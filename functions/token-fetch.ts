/**
 * `token-fetch` (Lambda Invoke): a valid access token for a connection, with the
 * headers and API base URL its CRM needs; refreshed first when it would not stay
 * valid for `minValiditySeconds`, or on `forceRefresh`. Never the refresh token.
 */
import type { Context } from 'aws-lambda';
import { type Deps, lambdaHandler } from './lib/deps.ts';
import { invokeHandler } from './lib/middleware.ts';
import { fetchToken } from './lib/tokens.ts';
import * as v from './lib/validate.ts';

/** Time kept back from the Lambda's remaining time to answer and report. */
const ANSWER_MARGIN_MS = 1_000;

export const createHandler = (deps: Deps) =>
  invokeHandler(deps, 'token-fetch', async (event: unknown, context: Context) => {
    const payload = v.objectPayload(event, ['connectionId', 'minValiditySeconds', 'forceRefresh']);
    const remaining = context.getRemainingTimeInMillis?.();
    const started = deps.now();
    const answer = await fetchToken(deps, {
      connectionId: v.connectionId(payload.connectionId),
      minValiditySeconds: v.integer(payload.minValiditySeconds, 'minValiditySeconds', 300, 0, 86_400),
      forceRefresh: v.boolean(payload.forceRefresh, 'forceRefresh', false),
      ...(remaining ? { deadline: deps.now() + remaining - ANSWER_MARGIN_MS } : {}),
    });
    deps.metrics.milliseconds('TokenFetchLatency', deps.now() - started);
    return answer;
  });

export const handler = lambdaHandler(createHandler);
