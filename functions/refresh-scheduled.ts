/**
 * `refresh-scheduled` (EventBridge schedule): refreshes the tokens due within the
 * lead window, and health-checks tokens that never expire, within a time budget
 * below the function's timeout.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { Context } from 'aws-lambda';
import { type Deps, lambdaHandler } from './lib/deps.ts';
import { invokeHandler } from './lib/middleware.ts';
import { runScheduledRefresh } from './lib/scheduler.ts';

/** Kept back from the function's remaining time so a run always ends cleanly. */
const SAFETY_MS = 15_000;
const DEFAULT_BUDGET_MS = 60_000;

export const createHandler = (deps: Deps, db: DynamoDBClient = deps.store.client) =>
  invokeHandler(deps, 'refresh-scheduled', async (_event: unknown, context: Context) => {
    const remaining = context.getRemainingTimeInMillis?.();
    const budgetMs = remaining ? Math.max(1_000, remaining - SAFETY_MS) : DEFAULT_BUDGET_MS;
    return runScheduledRefresh(deps, db, { budgetMs });
  });

export const handler = lambdaHandler((deps) => createHandler(deps));
