/**
 * `GET /connect/{provider}?session=...`: consume the connect session, bind the
 * flow to this browser with a cookie, and send the browser to the CRM.
 */
import { beginAuthorization } from './lib/connect-flow.ts';
import { type Deps, lambdaHandler } from './lib/deps.ts';
import { FlowError } from './lib/errors.ts';
import { FLOW_COOKIE, type HttpEvent, flowCookie, queryParams, readCookie, redirect } from './lib/http.ts';
import { httpHandler } from './lib/middleware.ts';
import { isProviderId } from './lib/providers.ts';

export const createHandler = (deps: Deps) =>
  httpHandler(deps, 'authorize', async (event: HttpEvent) => {
    const provider = event.pathParameters?.provider;
    if (!isProviderId(provider) || !deps.config.clients[provider]) {
      throw new FlowError(404, 'unknown_provider', 'This CRM is not available.');
    }
    const { location, cookieValue } = await beginAuthorization(
      deps,
      provider,
      queryParams(event).session,
      readCookie(event, FLOW_COOKIE),
    );
    return redirect(location, [flowCookie(cookieValue, deps.config.stateTtlSeconds)]);
  });

export const handler = lambdaHandler(createHandler);
