/**
 * The local broker: one process on 127.0.0.1 serving the public routes, the
 * Lambda Invoke API, the scheduled refresh, an embedded store, a local master
 * key and sandbox CRMs, as described in docs/contract.md ("What `npm start` runs").
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { Context, SQSEvent } from 'aws-lambda';
import { awsClientOptions } from '../functions/adapters/aws-clients.ts';
import { loadConfig } from '../functions/adapters/lambda/config.ts';
import {
  type BrokerDeps,
  type DepsOverrides,
  createDeps,
  createKeyProvider,
  depsFor,
} from '../functions/adapters/lambda/wiring.ts';
import { MemoryEventLog } from '../functions/adapters/eventbridge/events.ts';
import type { HttpResult } from '../functions/adapters/lambda/responses.ts';
import { type ProviderId, envPrefix, providerIds } from '../functions/core/domain/providers.ts';
import {
  type FunctionName,
  functionNames,
  functionSettings,
  httpRoutes,
  invokableFunctions,
  matchRoutePath,
} from '../manifest/functions.ts';
import { startEmbeddedDynamo } from './embedded-store.ts';
import { readBodyBytes } from './request-body.ts';
import { ensureTable } from './ensure-table.ts';
import { type AnyHandler, handlerFactories } from './functions.ts';
import { FileEventLog } from './event-file.ts';
import { type StripFigure, homeRoutes } from './home.ts';
import { httpApiEvent, lambdaContext, scheduledEvent } from './lambda-events.ts';
import { demoActionRefusal, serviceRequestRefusal } from './loopback-guard.ts';
import { type Sandbox, createSandbox } from './sandbox/index.ts';
import { type SandboxRateLimit, parseSandboxRateLimit } from './sandbox/rate-limit.ts';
import { type FinalOutcome, LocalRefreshQueue, type WorkerAnswer, localWorkerCaps } from './refresh-queue.ts';
import { WORKER_BATCH_SIZE } from '../manifest/refresh-queues.ts';

export interface LocalServerOptions {
  /** Environment (defaults to `process.env`). */
  env?: Record<string, string | undefined>;
  /** Port (`PORT`, else 3000); 0 picks a free one. */
  port?: number;
  /** Where the embedded store, master key and sandbox keep their data; `null` keeps everything in memory. */
  dataDir?: string | null;
  /** Run `refresh-scheduled` every `REFRESH_INTERVAL_SECONDS` (default true). */
  schedule?: boolean;
  /** Sandbox token lifetime override, to watch refreshes happen in minutes. */
  sandboxTokenLifetimeSeconds?: number;
  /** Called with one short line per request (method, path without query, status, ms) and per event. */
  log?: (line: string) => void;
  /** More figures for the demo page's status strip. */
  figures?: () => Promise<readonly StripFigure[]>;
  /**
   * Test hooks: a fetch, clock or DynamoDB client of their own, an observer of the AWS clients and
   * ports (it is handed the DynamoDB client too), a narrowed grant table.
   */
  overrides?: DepsOverrides;
}

export interface LocalServer {
  url: string;
  port: number;
  /** Every port, for the demo page and tests that look behind the functions' backs; not attributed to a function. */
  deps: BrokerDeps;
  /** What each function's handler was given: the ports its manifest entry grants, as in AWS. */
  functionDeps: Record<FunctionName, BrokerDeps>;
  /** Lifecycle events: the latest in memory, and in `<dataDir>/events.jsonl` when there is a data folder. */
  events: MemoryEventLog;
  /** Where the events are kept across restarts, if they are. */
  eventsFile?: string;
  sandbox: Sandbox;
  /** Which providers are served by the sandbox (no client credentials configured). */
  sandboxProviders: ProviderId[];
  dynamo: DynamoDBClient;
  handlers: Record<FunctionName, AnyHandler>;
  /** The refresh queues in process (per-CRM depth for the demo page, peaks for tests). */
  refreshQueue: LocalRefreshQueue;
  /** Invokes a function as the Lambda Invoke API would. */
  invoke(name: FunctionName, payload: unknown): Promise<unknown>;
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 6 * 1024 * 1024;

const running = new AsyncLocalStorage<FunctionName>();

/**
 * The function whose invocation the caller is part of (the handler and all it
 * started, awaited or not), or undefined outside every handler: test setup,
 * the demo page, table creation.
 */
export const runningFunction = (): FunctionName | undefined => running.getStore();

/** The default deployment's names (`<prefix>-<function>`), accepted locally so the same caller code works in both. */
const DEPLOYED_PREFIX = 'crm-oauth-broker-';

/** The local function a name, partial ARN or full ARN (with an optional qualifier) names, if any. */
export function localFunctionName(raw: string): FunctionName | undefined {
  const bare = (raw.includes(':function:') ? raw.split(':function:')[1] : raw)?.split(':')[0] ?? '';
  const name = bare.startsWith(DEPLOYED_PREFIX) ? bare.slice(DEPLOYED_PREFIX.length) : bare;
  return (invokableFunctions as readonly string[]).includes(name) ? (name as FunctionName) : undefined;
}

const readBody = (req: IncomingMessage): Promise<Buffer> => readBodyBytes(req, MAX_BODY_BYTES);

function localMasterKey(dataDir: string | null): string {
  if (dataDir === null) return randomBytes(32).toString('base64');
  const file = join(dataDir, 'master.key');
  if (!existsSync(file)) {
    writeFileSync(file, randomBytes(32).toString('base64'), { mode: 0o600 });
    chmodSync(file, 0o600);
  }
  return readFileSync(file, 'utf8').trim();
}

function writeResult(res: ServerResponse, result: HttpResult | undefined) {
  const r = result ?? { statusCode: 200 };
  const headers: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(r.headers ?? {})) headers[k] = String(v);
  if (r.cookies && r.cookies.length > 0) headers['Set-Cookie'] = r.cookies;
  res.writeHead(r.statusCode ?? 200, headers);
  res.end(r.body === undefined ? '' : r.isBase64Encoded ? Buffer.from(r.body, 'base64') : r.body);
}

function lambdaError(res: ServerResponse, status: number, type: string, message: string) {
  res.writeHead(status, { 'Content-Type': 'application/json', 'x-amzn-ErrorType': type });
  res.end(JSON.stringify({ Type: 'User', message }));
}

/** The demo page's figure for the refresh queues: messages per CRM, with a worker and dead-lettered. */
function queueFigure(queue: LocalRefreshQueue): StripFigure {
  const depth = queue.depth();
  const value = providerIds
    .map((p) => {
      const { waiting, inFlight, deadLetters } = depth[p];
      const more = [inFlight ? `${inFlight} in work` : '', deadLetters ? `${deadLetters} dead` : '']
        .filter(Boolean)
        .join(', ');
      return `${p} ${waiting + inFlight}${more ? ` (${more})` : ''}`;
    })
    .join(' · ');
  return {
    label: 'refresh queues',
    value,
    title:
      'Messages in each CRM refresh queue: handed out by the scheduled dispatcher, refreshed by workers, at most the CRM worker cap at once (REFRESH_WORKER_CAP_<CRM>)',
  };
}

/** What the workers did with one scheduled pass's messages, in the summary's terms. */
function passSummary(ended: Partial<Record<FinalOutcome, number>>) {
  return {
    refreshed: ended.refreshed ?? 0,
    failed: ended.failed ?? 0,
    needsReauth: ended.needsReauth ?? 0,
    skipped: ended.skipped ?? 0,
    returned: ended.returned ?? 0,
    deadLettered: ended.deadLettered ?? 0,
    unconfirmedDiscarded: ended.unconfirmedDiscarded ?? 0,
  };
}

/** `SANDBOX_RATE_LIMIT=<requests>/<seconds>`: one small API limit for every sandbox CRM; a typo fails the start. */
function sandboxRateLimit(value: string | undefined): { rateLimit?: SandboxRateLimit } {
  if (!value) return {};
  const rateLimit = parseSandboxRateLimit(value);
  if (!rateLimit) throw new Error('SANDBOX_RATE_LIMIT must be <requests>/<seconds>, e.g. 10/1');
  return { rateLimit };
}

export async function startLocalServer(options: LocalServerOptions = {}): Promise<LocalServer> {
  const env = { ...(options.env ?? process.env) };
  // The demo page on `/` shows refreshes by their `connection.refreshed` events, so locally they are on
  // unless the environment says otherwise (deployments leave them off: docs/contract.md#events).
  env.PUBLISH_REFRESHED_EVENTS ??= 'true';
  // EMF metrics are for CloudWatch; locally they would only clutter the console.
  process.env.POWERTOOLS_METRICS_DISABLED ??= 'true';
  const dataDir = options.dataDir === undefined ? '.data' : options.dataDir;
  if (dataDir !== null) mkdirSync(dataDir, { recursive: true });

  // Listen first: the port is part of PUBLIC_BASE_URL, the redirect URIs and the sandbox's URLs.
  let app: ((req: IncomingMessage, res: ServerResponse) => Promise<void>) | undefined;
  // What a request's log line adds to its status: an invocation's errorType.
  const outcomes = new WeakMap<ServerResponse, string>();
  const server = createServer((req, res) => {
    const log = options.log;
    if (log) {
      const started = process.hrtime.bigint();
      res.once('finish', () => {
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        // The path only: query strings carry sessions, codes and states.
        const path = (req.url ?? '/').split('?')[0];
        const note = outcomes.get(res);
        log(`${req.method ?? 'GET'} ${path} ${res.statusCode}${note ? ` ${note}` : ''} ${ms.toFixed(0)} ms`);
      });
    }
    if (!app) {
      res.writeHead(503).end('starting');
      return;
    }
    app(req, res).catch((err) => {
      console.error('local server: unexpected failure', (err as Error).name);
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end('Internal error');
    });
  });
  const requestedPort = options.port ?? Number(env.PORT ?? 3000);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(requestedPort, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  env.PORT = String(port);
  env.PUBLIC_BASE_URL ??= `http://localhost:${port}`;
  const baseUrl = env.PUBLIC_BASE_URL.replace(/\/+$/, '');

  const closers: (() => Promise<void>)[] = [];
  try {
    // Store: DynamoDB at AWS_ENDPOINT_URL_DYNAMODB, else the embedded one.
    let endpoint = env.AWS_ENDPOINT_URL_DYNAMODB;
    if (!endpoint) {
      const embedded = await startEmbeddedDynamo({
        ...(dataDir !== null ? { dataDir: join(dataDir, 'dynamodb') } : {}),
        port: 0,
      });
      endpoint = embedded.endpoint;
      closers.push(() => embedded.close());
    }
    const dynamo =
      options.overrides?.dynamo ??
      new DynamoDBClient({
        ...awsClientOptions(endpoint),
        region: env.AWS_REGION ?? 'us-east-1',
        credentials: {
          accessKeyId: env.AWS_ACCESS_KEY_ID ?? 'local',
          secretAccessKey: env.AWS_SECRET_ACCESS_KEY ?? 'local',
        },
      });
    const observer = options.overrides?.observer;
    observer?.awsClient?.(dynamo);
    const tableName = env.TABLE_NAME || 'crm-oauth-broker';
    await ensureTable(dynamo, tableName);

    // Key: KMS when KMS_KEY_ID is set, else the local master key.
    if (!env.KMS_KEY_ID) env.LOCAL_MASTER_KEY ??= localMasterKey(dataDir);

    // Sandbox CRMs for every provider with no client credentials configured.
    const sandbox = createSandbox({
      baseUrl,
      ...(options.sandboxTokenLifetimeSeconds
        ? { tokenLifetimeSeconds: options.sandboxTokenLifetimeSeconds }
        : {}),
      ...(dataDir !== null ? { dataFile: join(dataDir, 'sandbox.json') } : {}),
      ...sandboxRateLimit(env.SANDBOX_RATE_LIMIT),
    });
    closers.push(() => sandbox.close());
    const sandboxProviders = providerIds.filter((p) => !env[`${envPrefix(p)}_CLIENT_ID`]);
    // Explicit settings win: a test may point one sandbox endpoint through a proxy of its own.
    for (const [key, value] of Object.entries(sandbox.env(sandboxProviders))) env[key] ??= value;

    const eventsFile = dataDir !== null ? join(dataDir, 'events.jsonl') : undefined;
    const log = options.log;
    const events = eventsFile
      ? new FileEventLog(
          eventsFile,
          log &&
            ((e) =>
              log(
                `event ${e.type} ${e.detail.provider} ${e.detail.connectionId}${e.detail.reason ? ` ${e.detail.reason}` : ''}`,
              )),
        )
      : new MemoryEventLog();
    // One table client and one key for all functions, as one table and one KMS key serve them in AWS.
    const keyProvider = options.overrides?.keyProvider ?? createKeyProvider(loadConfig(env), env, observer);
    // The refresh queues in process, driving refresh-worker as SQS would, with each CRM's worker cap
    // (REFRESH_WORKER_CAP_<CRM>, refreshes at once), batches of at most LOCAL_QUEUE_BATCH_SIZE (default:
    // what the cap's shape allows, as deployed) and a visibility
    // timeout scaled down to LOCAL_QUEUE_VISIBILITY_MS (default 1 s).
    // The worker handler exists only once the handlers are built, below.
    const worker: { deliver?: (event: SQSEvent) => Promise<WorkerAnswer> } = {};
    const refreshQueue = new LocalRefreshQueue({
      caps: localWorkerCaps(env),
      visibilityTimeoutMs: Number(env.LOCAL_QUEUE_VISIBILITY_MS) || 1_000,
      // SQS may hand a worker fewer messages than its batch size; smaller batches show the cap at work sooner.
      batchSize: Math.max(1, Number(env.LOCAL_QUEUE_BATCH_SIZE) || WORKER_BATCH_SIZE),
      deliver: (event) => (worker.deliver as NonNullable<typeof worker.deliver>)(event),
      onInvocationError: (err) => console.error('refresh worker failed', (err as Error).name),
    });
    closers.push(async () => refreshQueue.close());
    const shared: DepsOverrides = { events, refreshQueue, ...options.overrides, dynamo, keyProvider };
    const deps = createDeps(env, shared);
    // Each function wired as in AWS: the ports its manifest entry grants, its own data-key cache, and a
    // logger of its own, so concurrent local invocations don't mix their keys.
    const functionDeps = Object.fromEntries(
      functionNames.map((name) => [
        name,
        depsFor(name, env, { ...shared, logger: deps.logger.createChild() }),
      ]),
    ) as Record<FunctionName, BrokerDeps>;
    const handlers = Object.fromEntries(
      functionNames.map((name) => {
        const handler = handlerFactories[name](functionDeps[name]);
        // Everything the invocation does, awaited or not, is this function's (`runningFunction`).
        const invocation: AnyHandler = (event, context) => running.run(name, () => handler(event, context));
        return [name, invocation];
      }),
    ) as Record<FunctionName, AnyHandler>;

    const run = async (name: FunctionName, payload: unknown) =>
      (handlers[name] as (e: unknown, c: Context) => Promise<unknown>)(
        payload,
        lambdaContext(name, functionSettings[name].timeoutSeconds * 1000),
      );
    worker.deliver = (event) => run('refresh-worker', event) as Promise<WorkerAnswer>;
    // One scheduled pass runs to completion: the dispatch, then every message it queued, worked off.
    const invoke = async (name: FunctionName, payload: unknown) => {
      if (name !== 'refresh-scheduled') return run(name, payload);
      const mark = refreshQueue.mark();
      const dispatched = (await run(name, payload)) as Record<string, unknown>;
      return { ...dispatched, ...passSummary(await refreshQueue.settled(mark)) };
    };

    // When the in-process schedule runs next (epoch ms), for the demo page.
    let nextRunAt: number | undefined;
    const home = homeRoutes({
      deps,
      events,
      invoke,
      sandboxProviders,
      baseUrl,
      port,
      ...(options.schedule !== false
        ? { schedule: { intervalSeconds: deps.config.refreshIntervalSeconds, nextRunAt: () => nextRunAt } }
        : {}),
      ...(eventsFile ? { eventsFile } : {}),
      // The refresh queues' depth per CRM first, then whatever the caller adds.
      figures: async () => [queueFigure(refreshQueue), ...((await options.figures?.()) ?? [])],
    });

    // The Invoke API and the IAM routes answer only loopback callers that no browser marks as another
    // site (loopback-guard.ts); a refusal is logged with its fixed reason, never a header value.
    const refusal = (req: IncomingMessage, what: string): string | undefined => {
      const reason = serviceRequestRefusal(req, port);
      if (reason) console.warn(`local server: refused ${what} (403): ${reason}`);
      return reason;
    };

    app = async (req, res) => {
      const url = new URL(req.url ?? '/', baseUrl);
      const method = req.method ?? 'GET';
      if (url.pathname.startsWith('/sandbox/') && (await sandbox.handle(req, res))) return;

      // The Lambda Invoke API, as @aws-sdk/client-lambda speaks it.
      const invokeMatch = /^\/2015-03-31\/functions\/([^/]+)\/invocations$/.exec(url.pathname);
      if (invokeMatch && method === 'POST') {
        const refused = refusal(req, 'a Lambda Invoke API request');
        if (refused) {
          lambdaError(res, 403, 'AccessDeniedException', refused);
          return;
        }
        const name = localFunctionName(decodeURIComponent(invokeMatch[1] as string));
        if (!name) {
          lambdaError(
            res,
            404,
            'ResourceNotFoundException',
            `Function not found. Locally the functions are ${invokableFunctions.join(', ')} (the deployed names, e.g. ${DEPLOYED_PREFIX}token-fetch, work too)`,
          );
          return;
        }
        const body = await readBody(req).catch(() => undefined);
        if (!body) {
          lambdaError(res, 413, 'RequestTooLargeException', 'Request must be smaller than 6291456 bytes');
          return;
        }
        let payload: unknown = name === 'refresh-scheduled' ? scheduledEvent() : {};
        if (body.length > 0) {
          try {
            payload = JSON.parse(body.toString('utf8'));
          } catch {
            lambdaError(res, 400, 'InvalidRequestContentException', 'Could not parse request body into json');
            return;
          }
        }
        try {
          const result = await invoke(name, payload);
          res.writeHead(200, { 'Content-Type': 'application/json', 'X-Amz-Executed-Version': '$LATEST' });
          res.end(JSON.stringify(result ?? null));
        } catch (err) {
          const e = err as Error;
          outcomes.set(res, e.name ?? 'Error');
          res.writeHead(200, {
            'Content-Type': 'application/json',
            'X-Amz-Executed-Version': '$LATEST',
            'X-Amz-Function-Error': 'Unhandled',
          });
          res.end(JSON.stringify({ errorType: e.name ?? 'Error', errorMessage: e.message ?? '', trace: [] }));
        }
        return;
      }

      // The public routes, from the same route table as the CDK stack.
      for (const route of httpRoutes) {
        const params = matchRoutePath(route.path, url.pathname);
        if (!params || route.method !== method) continue;
        // The browser routes (`NONE`) stay open to every site: CRMs send browsers there cross-site.
        const refused =
          route.authorization === 'IAM' ? refusal(req, `${route.method} ${route.path}`) : undefined;
        if (refused) {
          res.writeHead(403, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
          res.end(JSON.stringify({ message: refused }));
          return;
        }
        const body = await readBody(req).catch(() => undefined);
        if (!body) {
          res.writeHead(413).end('Request too large');
          return;
        }
        const event = httpApiEvent(req, url, `${route.method} ${route.path}`, params, body);
        const handler = handlers[route.function] as (e: unknown, c: Context) => Promise<HttpResult>;
        writeResult(
          res,
          await handler(
            event,
            lambdaContext(route.function, functionSettings[route.function].timeoutSeconds * 1000),
          ),
        );
        return;
      }

      // The demo page's own Origin/Sec-Fetch-Site check takes `Origin: null`; a DNS-rebound page sends
      // that too, so its actions also need a Host that is ours.
      if (method === 'POST' && url.pathname.startsWith('/demo/')) {
        const reason = demoActionRefusal(req, port, new URL(baseUrl).host);
        if (reason) {
          console.warn(`local server: refused a demo page action (403): ${reason}`);
          res.writeHead(403, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store' });
          res.end('Cross-origin request refused');
          return;
        }
      }
      if (await home(req, res, url)) return;
      if (url.pathname === '/favicon.ico') {
        res.writeHead(204, { 'Cache-Control': 'max-age=86400' }).end();
        return;
      }
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end('Not found');
    };

    // The scheduled refresh, in-process, on the same interval as the AWS schedule.
    if (options.schedule !== false) {
      const intervalMs = deps.config.refreshIntervalSeconds * 1000;
      nextRunAt = Date.now() + intervalMs;
      const timer = setInterval(() => {
        nextRunAt = Date.now() + intervalMs;
        invoke('refresh-scheduled', scheduledEvent()).catch((err) =>
          console.error('scheduled refresh failed', (err as Error).name),
        );
      }, intervalMs);
      timer.unref();
      closers.push(async () => clearInterval(timer));
    }

    return {
      url: `http://127.0.0.1:${port}`,
      port,
      deps,
      functionDeps,
      events,
      ...(eventsFile ? { eventsFile } : {}),
      sandbox,
      sandboxProviders,
      dynamo,
      handlers,
      refreshQueue,
      invoke,
      close: async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        for (const close of closers.reverse()) await close();
      },
    };
  } catch (err) {
    server.close();
    for (const close of closers.reverse()) await close().catch(() => undefined);
    throw err;
  }
}
