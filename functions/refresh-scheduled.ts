/**
 * `refresh-scheduled` (EventBridge schedule, every minute by default): the
 * dispatcher. It finds the connections due within the lead window, claims each
 * one and hands it to its CRM's refresh queue, where `refresh-worker` refreshes
 * it; it also hands over connect results nobody confirmed in time, to be
 * discarded. It reads no token and calls no CRM (docs/scale.md).
 */
import type { Context } from 'aws-lambda';
import { type BrokerDeps, lambdaHandler } from './adapters/lambda/wiring.ts';
import { invokeHandler } from './adapters/lambda/middleware.ts';
import { dispatchDueRefreshes } from './core/use-cases/dispatch-refreshes.ts';
import { functionDeadline } from './core/domain/timeline.ts';

export const createHandler = (deps: BrokerDeps) =>
  invokeHandler(deps, 'refresh-scheduled', async (_event: unknown, context: Context) =>
    dispatchDueRefreshes(deps, {
      deadline: functionDeadline(deps.now(), context.getRemainingTimeInMillis?.()),
    }),
  );

export const handler = lambdaHandler('refresh-scheduled', (deps) => createHandler(deps));
