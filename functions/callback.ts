/**
 * `GET` and `POST /callback/{provider}`: validate the CRM's answer, consume the
 * state, exchange the code, encrypt, store, and redirect to `returnTo` (or show
 * a result page).
 *
 * Copper returns with a cross-site form POST, on which browsers do not send our
 * `SameSite=Lax` cookie. Such a POST is bounced once through a page that
 * re-submits the same fields to this same path: that second POST is same-site,
 * so the cookie comes with it and the browser binding still holds
 * (security.md row 2). The cookie is never relaxed to `SameSite=None`.
 */
import { type CallbackParams, completeAuthorization } from './core/use-cases/complete-authorization.ts';
import { type BrokerDeps, lambdaHandler } from './adapters/lambda/wiring.ts';
import { FlowError } from './core/domain/errors.ts';
import {
  FLOW_COOKIE,
  type HttpEvent,
  formParams,
  htmlPage,
  queryParams,
  readCookie,
  redirect,
  returnToWith,
} from './adapters/lambda/responses.ts';
import { markup } from './adapters/lambda/html.ts';
import { httpHandler } from './adapters/lambda/middleware.ts';
import * as v from './adapters/lambda/validate.ts';

const FIELDS = ['state', 'code', 'error', 'error_description', 'iss'] as const;
const BOUNCED = '_bounced';

export const createHandler = (deps: BrokerDeps) =>
  httpHandler(deps, 'callback', async (event: HttpEvent) => {
    const provider = v.offeredProvider(deps.config, event.pathParameters?.provider);
    const method = event.requestContext.http.method;
    if (method !== 'GET' && method !== 'POST')
      throw new FlowError('method_not_allowed', 'Method not allowed.');
    // Copper posts a form; some integrations read its answer from the query: accept both.
    const raw = method === 'POST' ? { ...queryParams(event), ...formParams(event) } : queryParams(event);
    const params: CallbackParams = {};
    for (const field of FIELDS) if (raw[field] !== undefined) params[field] = raw[field];

    const cookie = readCookie(event, FLOW_COOKIE);
    if (method === 'POST' && cookie === undefined && raw[BOUNCED] === undefined) {
      return bouncePage(
        `${deps.config.publicBaseUrl}/callback/${provider}`,
        params,
        deps.config.returnToOrigins,
      );
    }

    const outcome = await completeAuthorization(deps, provider, params, cookie);
    if (outcome.kind === 'pending') {
      // The app's backend confirms who connected (`connections confirm`) with this one-time code.
      return redirect(
        returnToWith(outcome.returnTo, { status: 'pending', confirmation: outcome.confirmation }),
      );
    }
    const { connectionId } = outcome.connection;
    if (outcome.returnTo) {
      return redirect(returnToWith(outcome.returnTo, { status: 'connected', connection_id: connectionId }));
    }
    const account = outcome.connection.account.name ?? outcome.connection.account.id;
    return htmlPage(
      200,
      'Connected',
      markup`<h1 class="ok">Connected to ${outcome.providerName}</h1>
<p>The account <strong>${account}</strong> is now ${outcome.created ? 'connected' : 'reconnected'}.</p>
<p>Connection id: <code>${connectionId}</code></p><p>You can close this page.</p>`,
    );
  });

/**
 * Re-submits the CRM's form answer to ourselves, same-site, so the Lax cookie is sent. Browsers apply
 * the page's `form-action` to the redirects that follow the submission too, so it names every
 * `returnTo` origin the answer may redirect to.
 */
function bouncePage(action: string, params: CallbackParams, returnToOrigins: ReadonlySet<string>) {
  const inputs = Object.entries(params).map(
    ([name, value]) => markup`<input type="hidden" name="${name}" value="${value}">`,
  );
  return htmlPage(
    200,
    'Finishing the connection',
    markup`<h1>Finishing the connection…</h1><p>If nothing happens, continue by hand:</p>
<form method="post" action="${new URL(action)}">${inputs}<input type="hidden" name="${BOUNCED}" value="1">
<button type="submit">Continue</button></form>`,
    { script: 'document.forms[0].submit();', formAction: ["'self'", ...returnToOrigins].join(' ') },
  );
}

export const handler = lambdaHandler('callback', createHandler);
