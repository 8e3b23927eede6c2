/** Every function's `createHandler`, by name: the local server builds the same handlers AWS runs. */
import type { Context } from 'aws-lambda';
import * as authorize from '../functions/authorize.ts';
import * as callback from '../functions/callback.ts';
import * as connectSession from '../functions/connect-session.ts';
import * as connections from '../functions/connections.ts';
import * as crmRequest from '../functions/crm-request.ts';
import type { BrokerDeps } from '../functions/adapters/lambda/wiring.ts';
import type { FunctionName } from '../manifest/functions.ts';
import * as refresh from '../functions/refresh.ts';
import * as refreshScheduled from '../functions/refresh-scheduled.ts';
import * as refreshWorker from '../functions/refresh-worker.ts';
import * as tokenFetch from '../functions/token-fetch.ts';

export type AnyHandler = (event: never, context: Context) => Promise<unknown>;

export const handlerFactories: Record<FunctionName, (deps: BrokerDeps) => AnyHandler> = {
  'connect-session': connectSession.createHandler,
  authorize: authorize.createHandler,
  callback: callback.createHandler,
  'token-fetch': tokenFetch.createHandler,
  connections: connections.createHandler,
  refresh: refresh.createHandler,
  'refresh-scheduled': (deps) => refreshScheduled.createHandler(deps),
  'refresh-worker': refreshWorker.createHandler,
  'crm-request': crmRequest.createHandler,
};
