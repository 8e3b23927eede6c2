/**
 * The deploy manifest: every function, its settings and routes. The CDK stack,
 * the local server and the tests all read it, so what runs locally is what
 * deploys; infra/ imports nothing of the broker but the manifest.
 */
export { type ProviderId, envPrefix, providerIds } from '../functions/core/domain/providers.ts';
export { originOf } from '../functions/core/domain/config.ts';
export { integerIn } from '../functions/core/domain/numbers.ts';
import { WORKER_TIMEOUT_SECONDS } from '../functions/core/domain/refresh-queue.ts';

/** `source` of every event the broker publishes (EventBridge rules and the role's condition use it). */
export const EVENT_SOURCE = 'crm-oauth-broker';

/** Every Lambda function of the broker, by its public name. */
export const functionNames = [
  'connect-session',
  'authorize',
  'callback',
  'token-fetch',
  'connections',
  'refresh',
  'refresh-scheduled',
  'refresh-worker',
  'crm-request',
] as const;
export type FunctionName = (typeof functionNames)[number];

/**
 * The functions that run refreshes (refresh-connection.ts): token-fetch and the refresh route when a
 * token is due or forced, crm-request when due or after a 401, the workers for the schedule. They read
 * `PUBLISH_REFRESHED_EVENTS`; the others never publish `connection.refreshed`.
 */
export const refreshingFunctions: readonly FunctionName[] = [
  'token-fetch',
  'refresh',
  'crm-request',
  'refresh-worker',
];

/** Source file of each function's handler, relative to the repository root. */
export const functionEntry = (name: FunctionName): string => `functions/${name}.ts`;

export interface FunctionSettings {
  readonly description: string;
  /**
   * Fits the work. Browser routes stay under API Gateway's 30 s. Functions that refresh outlast a
   * whole refresh (`REFRESH_MAX_MS`, timeline.ts), since Lambda ending a refresh mid-flight loses a
   * rotated grant; behind the refresh route, API Gateway may answer 503 at 30 s while the function
   * still finishes and stores the refresh. test/unit/timeline.test.ts checks these against the timeline.
   */
  readonly timeoutSeconds: number;
  readonly memoryMb: number;
}

export const functionSettings: Readonly<Record<FunctionName, FunctionSettings>> = {
  'connect-session': {
    description: 'Creates a single-use connect session',
    timeoutSeconds: 10,
    memoryMb: 256,
  },
  authorize: {
    description: 'GET /connect/{provider}: redirects to the CRM',
    timeoutSeconds: 10,
    memoryMb: 256,
  },
  callback: {
    description: 'GET|POST /callback/{provider}: completes the flow',
    timeoutSeconds: 29,
    memoryMb: 256,
  },
  'token-fetch': { description: 'Returns a valid access token', timeoutSeconds: 100, memoryMb: 256 },
  connections: { description: 'Lists, gets and deletes connections', timeoutSeconds: 125, memoryMb: 256 },
  refresh: { description: 'Forces a refresh of one connection', timeoutSeconds: 100, memoryMb: 256 },
  // A refresh after a 401 between two CRM calls (crm-call.ts); 512 MB for answers of up to 5.5 MB.
  'crm-request': {
    description: 'Calls the CRM API with a connection token',
    timeoutSeconds: 160,
    memoryMb: 512,
  },
  // The dispatcher: claims due connections and queues them (docs/scale.md); it never refreshes itself.
  'refresh-scheduled': {
    description: 'Hands tokens due soon to the refresh queues',
    timeoutSeconds: 60,
    memoryMb: 512,
  },
  // One message at a time, each started only while a whole refresh still fits (refresh-queue.ts).
  'refresh-worker': {
    description: 'Refreshes the connections its CRM queue hands it',
    timeoutSeconds: WORKER_TIMEOUT_SECONDS,
    memoryMb: 256,
  },
};

export interface HttpRoute {
  readonly method: 'GET' | 'POST';
  /** API Gateway route path, with `{param}` placeholders. */
  readonly path: string;
  readonly function: FunctionName;
  /** `NONE` routes are public by design (browser redirects); `IAM` routes need a SigV4-signed caller. */
  readonly authorization: 'NONE' | 'IAM';
}

export const httpRoutes: readonly HttpRoute[] = [
  { method: 'GET', path: '/connect/{provider}', function: 'authorize', authorization: 'NONE' },
  { method: 'GET', path: '/callback/{provider}', function: 'callback', authorization: 'NONE' },
  { method: 'POST', path: '/callback/{provider}', function: 'callback', authorization: 'NONE' },
  {
    method: 'POST',
    path: '/connections/{connectionId}/refresh',
    function: 'refresh',
    authorization: 'IAM',
  },
];

/** Functions other services call with Lambda Invoke (and the local server exposes on its Invoke API). */
export const invokableFunctions: readonly FunctionName[] = [
  'connect-session',
  'token-fetch',
  'connections',
  'refresh',
  'refresh-scheduled',
  'crm-request',
];

/** Matches a concrete path against a route path; returns the path parameters or undefined. */
export function matchRoutePath(routePath: string, path: string): Record<string, string> | undefined {
  const want = routePath.split('/');
  const got = path.split('/');
  if (want.length !== got.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < want.length; i++) {
    const w = want[i] as string;
    const g = got[i] as string;
    if (w.startsWith('{') && w.endsWith('}')) {
      if (g === '') return undefined;
      let value: string;
      try {
        value = decodeURIComponent(g);
      } catch {
        return undefined;
      }
      params[w.slice(1, -1)] = value;
    } else if (w !== g) {
      return undefined;
    }
  }
  return params;
}
