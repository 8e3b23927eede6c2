/**
 * `GET /connect/{provider}?session=...`: consume the connect session, bind the
 * flow to this browser with a cookie, and send the browser to the CRM.
 */
import { beginAuthorization } from './core/use-cases/authorize.ts';
import { type BrokerDeps, lambdaHandler } from './adapters/lambda/wiring.ts';
import {
  FLOW_COOKIE,
  type HttpEvent,
  flowCookie,
  queryParams,
  readCookie,
  redirect,
} from './adapters/lambda/responses.ts';
import { httpHandler } from './adapters/lambda/middleware.ts';
import * as v from './adapters/lambda/validate.ts';

export const createHandler = (deps: BrokerDeps) =>
  httpHandler(deps, 'authorize', async (event: HttpEvent) => {
    const provider = v.offeredProvider(deps.config, event.pathParameters?.provider);
    const { location, cookieValue } = await beginAuthorization(
      deps,
      provider,
      queryParams(event).session,
      readCookie(event, FLOW_COOKIE),
    );
    return redirect(location, [flowCookie(cookieValue, deps.config.stateTtlSeconds)]);
  });

export const handler = lambdaHandler('authorize', createHandler);
