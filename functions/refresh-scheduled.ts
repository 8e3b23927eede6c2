/**
 * `refresh-scheduled` (EventBridge schedule): refreshes the tokens due within the
 * lead window, and health-checks tokens that never expire. It starts refreshes
 * only while a whole refresh still fits in the function's remaining time.
 */
import type { Context } from 'aws-lambda';
import { type BrokerDeps, lambdaHandler } from './adapters/lambda/wiring.ts';
import { invokeHandler } from './adapters/lambda/middleware.ts';
import { runScheduledRefresh } from './core/use-cases/scheduled-refresh.ts';
import { AWS_CALL_MAX_MS, REFRESH_MAX_MS, functionDeadline } from './core/domain/timeline.ts';

/** Without a Lambda context (a direct call): start refreshes for this long. */
const DEFAULT_BUDGET_MS = 60_000;

export const createHandler = (deps: BrokerDeps) =>
  invokeHandler(deps, 'refresh-scheduled', async (_event: unknown, context: Context) => {
    const now = deps.now();
    const deadline = functionDeadline(now, context.getRemainingTimeInMillis?.());
    // Start a refresh only while its worst case (reading it, then the whole refresh) still fits.
    const budgetMs =
      deadline === undefined
        ? DEFAULT_BUDGET_MS
        : Math.max(0, deadline - now - AWS_CALL_MAX_MS - REFRESH_MAX_MS);
    return runScheduledRefresh(deps, { budgetMs, ...(deadline ? { deadline } : {}) });
  });

export const handler = lambdaHandler('refresh-scheduled', (deps) => createHandler(deps));
