/**
 * The composition root: AWS clients and services built once per cold start
 * (module scope in Lambda) and handed to the handlers, so tests and the local
 * server can hand in their own.
 *
 * Each function is wired from its manifest entry (`functionAccess[name]`,
 * manifest/access.ts), the same entry its IAM role is made from: it gets the
 * token key, the client secrets and the event bus only if granted, and a
 * stand-in that throws `PortNotGranted` for each port it is not (grants.ts).
 */
import type { Context } from 'aws-lambda';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { KMSClient } from '@aws-sdk/client-kms';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { SQSClient } from '@aws-sdk/client-sqs';
import type { Logger } from '@aws-lambda-powertools/logger';
import { type Config, type Env, loadConfig } from './config.ts';
import { Envelope, type KeyProvider, KmsKeyProvider, LocalKeyProvider } from '../kms/envelope.ts';
import { MemoryKeyRing, TableKeyRing } from '../kms/key-ring.ts';
import { EventBridgePublisher, type EventPublisher, MemoryEventLog } from '../eventbridge/events.ts';
import { createLogger } from './logger.ts';
import { type BrokerMetrics, createMetrics } from './metrics.ts';
import { OAuthClient } from '../crm/oauth-client.ts';
import { ProviderHttp } from '../crm/crm-http.ts';
import { FetchCrmApi } from '../crm/crm-api.ts';
import { ConfiguredClientSecrets } from '../secrets/client-secrets.ts';
import type { Deps, RefreshQueue } from '../../core/ports.ts';
import { SqsRefreshQueue, queueUrlsFrom } from '../sqs/refresh-queue.ts';
import { Store } from '../dynamodb/store.ts';
import { DynamoRateBudgets } from '../dynamodb/rate-budget.ts';
import { awsClientOptions } from '../aws-clients.ts';
import { type FunctionAccess, functionAccess } from '../../../manifest/access.ts';
import type { FunctionName } from '../../../manifest/functions.ts';
import {
  type UngrantedCallListener,
  grantedKeyProvider,
  ungrantedClientSecrets,
  ungrantedCrmApi,
  ungrantedEvents,
  ungrantedRefreshQueue,
} from './grants.ts';

export { PortNotGranted, type UngrantedCall } from './grants.ts';

/** The ports as this process built them, with their concrete adapters (handlers, the local server, tests). */
export interface BrokerDeps extends Deps {
  store: Store;
  envelope: Envelope;
  oauth: OAuthClient;
  logger: Logger;
  metrics: BrokerMetrics;
}

/** Who may do what: `functionAccess` unless a test hands in another (to see a missing grant fail). */
export type GrantTable = Readonly<Record<FunctionName, FunctionAccess>>;

/** Every AWS SDK client the wiring builds. */
export type AwsClient = DynamoDBClient | KMSClient | SecretsManagerClient | EventBridgeClient | SQSClient;

/** Watches what the wiring hands out (the local server's and the tests' record of the calls functions make). */
export interface WiringObserver {
  /** Each AWS SDK client the wiring builds, before its first command; clients handed in are the caller's to observe. */
  awsClient?(client: AwsClient): void;
  /** Each call to a port the function is not granted, just before it throws. */
  ungranted?: UngrantedCallListener;
}

export interface DepsOverrides {
  dynamo?: DynamoDBClient;
  /** Used by the functions granted the token key; the others get a stand-in. */
  keyProvider?: KeyProvider;
  fetch?: typeof fetch;
  /** Used by the functions granted events; the others get a stand-in. */
  events?: EventPublisher;
  /** Used by the functions granted `refreshQueues: 'send'` (the local server's in-process queue). */
  refreshQueue?: RefreshQueue;
  logger?: Logger;
  metrics?: BrokerMetrics;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  observer?: WiringObserver;
  /** Read by `depsFor` (default: manifest/access.ts). */
  grants?: GrantTable;
}

/** What `createDeps` wires: every port (tests, benchmarks, the local demo page). */
const EVERY_PORT: FunctionAccess = {
  table: [],
  tokenKey: ['kms:Decrypt', 'kms:GenerateDataKey'],
  clientSecrets: true,
  events: true,
  refreshQueues: 'send',
  crmApi: true,
};

/** The token key: KMS when `KMS_KEY_ID` is set, else the local master key (one per process, or shared locally). */
export function createKeyProvider(config: Config, env: Env, observer?: WiringObserver): KeyProvider {
  if (!config.kmsKeyId) return new LocalKeyProvider(config.localMasterKey as string);
  const kms = new KMSClient(awsClientOptions(env.AWS_ENDPOINT_URL_KMS));
  observer?.awsClient?.(kms);
  return new KmsKeyProvider(kms, config.kmsKeyId);
}

/** The deps of one function: only the ports its manifest entry grants; the others throw `PortNotGranted`. */
export function depsFor(name: FunctionName, env: Env, overrides: DepsOverrides = {}): BrokerDeps {
  return wire(env, overrides, name, (overrides.grants ?? functionAccess)[name]);
}

/** Deps with every port, for code that is not one function (tests, benchmarks, the local demo page). */
export function createDeps(env: Env, overrides: DepsOverrides = {}): BrokerDeps {
  return wire(env, overrides, undefined, EVERY_PORT);
}

function wire(
  env: Env,
  overrides: DepsOverrides,
  name: FunctionName | undefined,
  access: FunctionAccess,
): BrokerDeps {
  const config = loadConfig(env);
  const logger = overrides.logger ?? createLogger();
  const now = overrides.now ?? Date.now;
  const sleep = overrides.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const { observer } = overrides;
  const observed = <C extends AwsClient>(client: C): C => {
    observer?.awsClient?.(client);
    return client;
  };
  const listener: UngrantedCallListener = (call) => observer?.ungranted?.(call);
  const grants = name ? { name, access } : undefined;

  const keys = () => overrides.keyProvider ?? createKeyProvider(config, env, observer);
  const keyProvider = grants
    ? grantedKeyProvider(
        grants.name,
        grants.access.tokenKey ?? [],
        // The ref the provider would have: the envelope checks it before asking for a key.
        overrides.keyProvider?.ref ?? (config.kmsKeyId ? 'kms' : 'local'),
        keys,
        listener,
      )
    : keys();

  let secretsManager: SecretsManagerClient | undefined;
  const configured = new ConfiguredClientSecrets(
    config,
    () => (secretsManager ??= observed(new SecretsManagerClient(awsClientOptions()))),
  );
  const secrets =
    !grants || grants.access.clientSecrets
      ? configured
      : ungrantedClientSecrets(grants.name, configured, listener);

  const events =
    !grants || grants.access.events
      ? (overrides.events ??
        (config.eventBusName
          ? new EventBridgePublisher(
              observed(new EventBridgeClient(awsClientOptions())),
              config.eventBusName,
              logger,
            )
          : new MemoryEventLog()))
      : ungrantedEvents(grants.name, listener);

  const refreshQueue: RefreshQueue =
    !grants || grants.access.refreshQueues === 'send'
      ? (overrides.refreshQueue ?? sqsRefreshQueue(env, Boolean(grants), observed))
      : ungrantedRefreshQueue(grants.name, listener);

  const crmApi =
    !grants || grants.access.crmApi
      ? new FetchCrmApi(overrides.fetch)
      : ungrantedCrmApi(grants.name, listener);

  const http = new ProviderHttp({ timeoutMs: config.providerTimeoutMs, fetch: overrides.fetch, now, sleep });
  const dynamo =
    overrides.dynamo ?? observed(new DynamoDBClient(awsClientOptions(env.AWS_ENDPOINT_URL_DYNAMODB)));
  return {
    config,
    store: new Store(dynamo, config.tableName),
    // Every CRM account's shared rate budget (crm-request): an item of the same table.
    rateBudgets: new DynamoRateBudgets(dynamo, config.tableName),
    // Intermediate keys shared by every container through the table (docs/key-hierarchy.md): only
    // functions that may make a key write tokens, so only they use the ring.
    envelope: new Envelope(
      keyProvider,
      undefined,
      now,
      access.tokenKey?.includes('kms:GenerateDataKey')
        ? new TableKeyRing(dynamo, config.tableName)
        : new MemoryKeyRing(),
    ),
    oauth: new OAuthClient(http, secrets),
    crmApi,
    events,
    logger,
    metrics: overrides.metrics ?? createMetrics(env),
    refreshQueue,
    now,
    sleep,
  };
}

/**
 * The SQS refresh queues. A function granted them checks their URLs at cold start; code that is
 * no function (tests, benchmarks) gets them checked at the first send.
 */
function sqsRefreshQueue(
  env: Env,
  atColdStart: boolean,
  observed: (c: SQSClient) => SQSClient,
): RefreshQueue {
  let queue: SqsRefreshQueue | undefined;
  const get = () =>
    (queue ??= new SqsRefreshQueue(
      observed(new SQSClient(awsClientOptions(env.AWS_ENDPOINT_URL_SQS))),
      queueUrlsFrom(env),
    ));
  if (atColdStart) get();
  return { send: (messages) => get().send(messages) };
}

type Handler<E, R> = (event: E, context: Context) => Promise<R>;

/** A function module's exported `handler`, saying which function it is. */
export type LambdaHandler<E, R> = Handler<E, R> & { readonly functionName?: FunctionName };

/**
 * The exported Lambda `handler` of a function module, wired for that function
 * from its manifest entry: `export const handler = lambdaHandler('token-fetch', createHandler)`.
 * In Lambda the deps are built at import (init), so a bad configuration fails
 * the cold start; elsewhere (tests, local server) only when first called, since
 * they call `create` with deps of their own.
 */
export function lambdaHandler<E, R>(
  name: FunctionName,
  create: (deps: BrokerDeps) => Handler<E, R>,
): LambdaHandler<E, R> {
  let handler: Handler<E, R> | undefined;
  const get = () => (handler ??= create(depsFor(name, process.env)));
  if (process.env.AWS_LAMBDA_FUNCTION_NAME) get();
  const exported: Handler<E, R> = (event, context) => get()(event, context);
  return Object.assign(exported, { functionName: name });
}
