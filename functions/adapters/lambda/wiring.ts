/**
 * The composition root: AWS clients and services built once per cold start
 * (module scope in Lambda) and handed to the handlers, so tests and the local
 * server can hand in their own.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { KMSClient } from '@aws-sdk/client-kms';
import type { Logger } from '@aws-lambda-powertools/logger';
import { type Env, loadConfig } from './config.ts';
import { Envelope, type KeyProvider, KmsKeyProvider, LocalKeyProvider } from '../kms/envelope.ts';
import { type EventPublisher, MemoryEventLog, createEventBridgePublisher } from '../eventbridge/events.ts';
import { createLogger } from './logger.ts';
import { type BrokerMetrics, createMetrics } from './metrics.ts';
import { OAuthClient } from '../crm/oauth-client.ts';
import { ProviderHttp } from '../crm/crm-http.ts';
import { ConfiguredClientSecrets } from '../secrets/client-secrets.ts';
import type { Deps } from '../../core/ports.ts';
import { Store } from '../dynamodb/store.ts';
import { awsClientOptions } from '../aws-clients.ts';

/** The ports as this process built them, with their concrete adapters (handlers, the local server, tests). */
export interface BrokerDeps extends Deps {
  store: Store;
  envelope: Envelope;
  oauth: OAuthClient;
  logger: Logger;
  metrics: BrokerMetrics;
}

export interface DepsOverrides {
  dynamo?: DynamoDBClient;
  keyProvider?: KeyProvider;
  fetch?: typeof fetch;
  events?: EventPublisher;
  logger?: Logger;
  metrics?: BrokerMetrics;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

export function createDeps(env: Env, overrides: DepsOverrides = {}): BrokerDeps {
  const config = loadConfig(env);
  const logger = overrides.logger ?? createLogger();
  const now = overrides.now ?? Date.now;
  const sleep = overrides.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const keyProvider =
    overrides.keyProvider ??
    (config.kmsKeyId
      ? new KmsKeyProvider(new KMSClient(awsClientOptions(env.AWS_ENDPOINT_URL_KMS)), config.kmsKeyId)
      : new LocalKeyProvider(config.localMasterKey as string));
  const http = new ProviderHttp({ timeoutMs: config.providerTimeoutMs, fetch: overrides.fetch, now, sleep });
  return {
    config,
    store: new Store(
      overrides.dynamo ?? new DynamoDBClient(awsClientOptions(env.AWS_ENDPOINT_URL_DYNAMODB)),
      config.tableName,
    ),
    envelope: new Envelope(keyProvider, undefined, now),
    oauth: new OAuthClient(http, new ConfiguredClientSecrets(config)),
    events:
      overrides.events ??
      (config.eventBusName ? createEventBridgePublisher(config.eventBusName, logger) : new MemoryEventLog()),
    logger,
    metrics: overrides.metrics ?? createMetrics(env),
    now,
    sleep,
  };
}

let processDeps: BrokerDeps | undefined;
/** The deps of this process, from `process.env` (Lambda). */
export const defaultDeps = (): BrokerDeps => (processDeps ??= createDeps(process.env));

/**
 * The exported Lambda `handler` of a function module. In Lambda the deps are
 * built at import (init), so a bad configuration fails the cold start; elsewhere
 * (tests, local server) only when first called, since they call `create` with
 * deps of their own.
 */
export function lambdaHandler<E, R>(
  create: (deps: BrokerDeps) => (event: E, context: import('aws-lambda').Context) => Promise<R>,
): (event: E, context: import('aws-lambda').Context) => Promise<R> {
  let handler: ((event: E, context: import('aws-lambda').Context) => Promise<R>) | undefined;
  const get = () => (handler ??= create(defaultDeps()));
  if (process.env.AWS_LAMBDA_FUNCTION_NAME) get();
  return (event, context) => get()(event, context);
}
