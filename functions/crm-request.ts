/**
 * `crm-request` (Lambda Invoke): calls the connection's CRM API with the
 * broker's token and answers `{ status, headers, body, bodyEncoding,
 * bodyTooLarge, retryAfterSeconds }` whatever the CRM's status
 * (docs/calling-the-crm.md). The path is checked before anything is read or
 * sent (security.md row 23).
 */
import type { Context } from 'aws-lambda';
import { type BrokerDeps, lambdaHandler } from './adapters/lambda/wiring.ts';
import { audited } from './adapters/lambda/audit.ts';
import { invokeHandler } from './adapters/lambda/middleware.ts';
import { CRM_METHODS, checkApiPath, checkHeaders, checkQuery, isCrmMethod } from './core/domain/api-path.ts';
import { InvalidRequest } from './core/domain/errors.ts';
import { functionDeadline } from './core/domain/timeline.ts';
import { crmRequest } from './core/use-cases/crm-request.ts';
import * as v from './adapters/lambda/validate.ts';

const FIELDS = ['connectionId', 'ownerId', 'method', 'path', 'query', 'headers', 'body', 'idempotent'];

/**
 * The body as sent: a string as it is; any other JSON value serialized, with
 * `Content-Type: application/json` unless the caller set a content type.
 */
function requestBody(
  method: string,
  body: unknown,
  headers: Record<string, string>,
): { body?: string; headers: Record<string, string> } {
  if (body === undefined || body === null) return { headers };
  if (method === 'GET' || method === 'HEAD') throw new InvalidRequest(`a ${method} request has no body`);
  if (typeof body === 'string') return { body, headers };
  const hasType = Object.keys(headers).some((name) => name.toLowerCase() === 'content-type');
  return {
    body: JSON.stringify(body),
    headers: hasType ? headers : { ...headers, 'Content-Type': 'application/json' },
  };
}

export const createHandler = (deps: BrokerDeps) =>
  invokeHandler(deps, 'crm-request', async (event: unknown, context: Context) => {
    const payload = v.objectPayload(event, FIELDS);
    const connectionId = v.connectionId(payload.connectionId);
    const ownerId = v.optionalOwnerId(payload.ownerId);
    const method = payload.method ?? 'GET';
    if (!isCrmMethod(method)) throw new InvalidRequest(`method must be one of ${CRM_METHODS.join(', ')}`);
    const path = checkApiPath(payload.path);
    const query = checkQuery(payload.query);
    const sent = requestBody(method, payload.body, checkHeaders(payload.headers));
    const deadline = functionDeadline(deps.now(), context.getRemainingTimeInMillis?.());
    const request = {
      connectionId,
      ownerId,
      method,
      path,
      query,
      headers: sent.headers,
      body: sent.body,
      idempotent: v.boolean(payload.idempotent, 'idempotent', false),
      deadline,
    };
    const access = { connectionId, ownerIdGiven: ownerId !== undefined };
    return audited(deps, 'crm-request', access, () => crmRequest(deps, request));
  });

export const handler = lambdaHandler('crm-request', createHandler);
