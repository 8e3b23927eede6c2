/**
 * `crm-request`: one call to a connection's CRM API on the caller's behalf,
 * with the broker's token (interface.md "Calling the CRM through the broker").
 *
 * - the URL is the connection's API base plus a checked path (api-path.ts,
 *   security.md row 23): a path that could leave the base never gets here;
 * - a 401 is answered by one refresh through the lease, exactly as `token-fetch`
 *   with `rejectedTokenSha256` (so a storm of callers refreshes once), and one
 *   retry; a second 401 is the answer;
 * - before every outbound call the account's shared rate budget admits it
 *   (rate-budget.ts), and every answer is recorded there; a CRM 429 is the
 *   answer, with its `Retry-After`;
 * - a 5xx or a network error is retried (3 attempts, short backoff, inside the
 *   caller's time) only for GET, HEAD and `idempotent: true`; a request that
 *   surely never left (connection refused) is retried for any method.
 */
import { type CrmMethod, apiUrl, isIdempotentMethod } from '../domain/api-path.ts';
import {
  CRM_CALL_ATTEMPTS,
  CRM_RETRY_BASE_MS,
  CRM_RETRY_MAX_MS,
  CRM_TOKEN_MIN_VALIDITY_SECONDS,
  type CrmAnswer,
  type CrmRequestAnswer,
  CrmUnreachable,
  MAX_CRM_BODY_BYTES,
  shapeAnswer,
} from '../domain/crm-call.ts';
import { ProviderUnavailable } from '../domain/errors.ts';
import type { ConnectionRecord } from '../domain/records.ts';
import { sha256Hex } from '../domain/secrets.ts';
import type { Deps } from '../ports.ts';
import { currentToken } from './fetch-token.ts';
import { admitRequest, recordCrmAnswer } from './rate-budget.ts';

export interface CrmRequest {
  connectionId: string;
  ownerId?: string | undefined;
  method: CrmMethod;
  /** Already checked by `checkApiPath` (the handler refuses a bad one before any read). */
  path: string;
  query: Record<string, string>;
  headers: Record<string, string>;
  /** The request body as sent (a JSON body already serialized), or undefined. */
  body?: string | undefined;
  /** The caller says repeating the request is harmless (retried after a 5xx like a GET). */
  idempotent: boolean;
  /** Epoch ms by which the function must be done (its remaining time less the answer margin). */
  deadline?: number | undefined;
}

/** Without a Lambda context (tests, scripts): this long from the start. */
const DEFAULT_BUDGET_MS = 60_000;

type Phase = { kind: 'answer'; answer: CrmAnswer } | { kind: 'refused'; retryAfterSeconds: number };

export async function crmRequest(deps: Deps, request: CrmRequest): Promise<CrmRequestAnswer> {
  const deadline = request.deadline ?? deps.now() + DEFAULT_BUDGET_MS;
  const tokenRequest = {
    connectionId: request.connectionId,
    ownerId: request.ownerId,
    minValiditySeconds: CRM_TOKEN_MIN_VALIDITY_SECONDS,
    forceRefresh: false,
    deadline,
  };
  let { connection, accessToken } = await currentToken(deps, tokenRequest);
  const provider = deps.config.providers[connection.provider];
  const url = apiUrl(provider.apiBaseUrl, request.path, request.query);

  let phase = await callPhase(deps, request, connection, url, accessToken, deadline);
  let refreshed = false;
  if (phase.kind === 'answer' && phase.answer.status === 401) {
    // One refresh through the lease, only if the token sent is still the stored one; then one retry.
    ({ connection, accessToken } = await currentToken(deps, {
      ...tokenRequest,
      rejectedTokenSha256: sha256Hex(accessToken),
    }));
    refreshed = true;
    phase = await callPhase(deps, request, connection, url, accessToken, deadline);
  }
  if (phase.kind === 'refused') {
    deps.logger.info('crm request held back by the rate budget', {
      connectionId: connection.connectionId,
      provider: connection.provider,
      method: request.method,
    });
    return {
      status: 429,
      headers: {},
      body: null,
      bodyEncoding: 'none',
      bodyTooLarge: false,
      retryAfterSeconds: phase.retryAfterSeconds,
    };
  }
  const answer = shapeAnswer(phase.answer, deps.now());
  // Ids, method and status only: never the path's values, the query, a header or a body.
  deps.logger.info('crm request answered', {
    connectionId: connection.connectionId,
    provider: connection.provider,
    method: request.method,
    status: answer.status,
    refreshed,
    bodyTooLarge: answer.bodyTooLarge,
  });
  return answer;
}

/**
 * One request with its retries: each attempt admitted by the shared budget
 * first and recorded there after. Returns the last answer, whatever its
 * status; throws `ProviderUnavailable` when no answer came at all.
 */
async function callPhase(
  deps: Deps,
  request: CrmRequest,
  connection: ConnectionRecord,
  url: URL,
  accessToken: string,
  deadline: number,
): Promise<Phase> {
  const provider = deps.config.providers[connection.provider];
  const repeatable = request.idempotent || isIdempotentMethod(request.method);
  const headers = sendHeaders(provider.apiHeaders, request.headers, accessToken);
  for (let attempt = 1; ; attempt++) {
    // A wait for the budget must leave time for the call itself.
    const admission = await admitRequest(deps, connection, deadline - deps.config.providerTimeoutMs);
    if (!admission.admitted) return { kind: 'refused', retryAfterSeconds: admission.retryAfterSeconds };
    const timeoutMs = Math.min(deps.config.providerTimeoutMs, deadline - deps.now());
    if (timeoutMs <= 0) throw new ProviderUnavailable('No time left to call the CRM');
    let retry: boolean;
    let failure: CrmUnreachable | undefined;
    try {
      const answer = await deps.crmApi.send({
        url,
        method: request.method,
        headers,
        ...(request.body !== undefined ? { body: request.body } : {}),
        timeoutMs,
        maxBodyBytes: MAX_CRM_BODY_BYTES,
      });
      await recordCrmAnswer(deps, connection, { status: answer.status, headers: answer.headers });
      if (answer.status < 500 || !repeatable || attempt >= CRM_CALL_ATTEMPTS) {
        return { kind: 'answer', answer };
      }
      retry = true;
      // A later attempt that finds no time answers with this one.
      if (!(await backoff(deps, attempt, deadline))) return { kind: 'answer', answer };
    } catch (err) {
      if (!(err instanceof CrmUnreachable)) throw err;
      failure = err;
      retry =
        (repeatable || !err.sent) && attempt < CRM_CALL_ATTEMPTS && (await backoff(deps, attempt, deadline));
    }
    if (!retry && failure) {
      throw new ProviderUnavailable(
        failure.sent
          ? 'The CRM did not answer; the request may have been processed'
          : 'The CRM could not be reached',
        undefined,
        { cause: failure },
      );
    }
  }
}

/** Sleeps before attempt `attempt + 1` if that attempt still has time to run; false when it has not. */
async function backoff(deps: Deps, attempt: number, deadline: number): Promise<boolean> {
  const base = Math.min(CRM_RETRY_MAX_MS, CRM_RETRY_BASE_MS * 2 ** (attempt - 1));
  const delay = base * (0.5 + Math.random() / 2);
  // The next attempt needs a sensible share of a call's timeout after the wait.
  if (deps.now() + delay + Math.min(deps.config.providerTimeoutMs, 1_000) > deadline) return false;
  await deps.sleep(delay);
  return true;
}

/** The CRM's own API headers, then the caller's (by name, any case), then the token: the caller cannot replace it. */
function sendHeaders(
  apiHeaders: Readonly<Record<string, string>>,
  callerHeaders: Readonly<Record<string, string>>,
  accessToken: string,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of [...Object.entries(apiHeaders), ...Object.entries(callerHeaders)]) {
    out[name.toLowerCase()] = value;
  }
  out.authorization = `Bearer ${accessToken}`;
  return out;
}
