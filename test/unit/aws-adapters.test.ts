/**
 * The AWS adapters where one exact failure matters, with aws-sdk-client-mock:
 * client secrets from Secrets Manager (Powertools Parameters, cached for a max age) and
 * events to EventBridge (best effort, never a token).
 */
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { Logger } from '@aws-lambda-powertools/logger';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../functions/adapters/lambda/config.ts';
import { ConfigError, contractError } from '../../functions/core/domain/errors.ts';
import {
  AWS_ATTEMPT_TIMEOUT_MS,
  AWS_CONNECT_TIMEOUT_MS,
  AWS_MAX_ATTEMPTS,
} from '../../functions/core/domain/timeline.ts';
import { createEventBridgePublisher } from '../../functions/adapters/eventbridge/events.ts';
import {
  CLIENT_SECRETS_MAX_AGE_SECONDS,
  ConfiguredClientSecrets,
} from '../../functions/adapters/secrets/client-secrets.ts';

const secretsMock = mockClient(SecretsManagerClient);
const eventsMock = mockClient(EventBridgeClient);

beforeEach(() => {
  secretsMock.reset();
  eventsMock.reset();
});
afterEach(() => vi.restoreAllMocks());

const env = {
  KMS_KEY_ID: 'arn:aws:kms:us-east-1:111122223333:key/k',
  CLIENT_SECRETS_ARN: 'arn:aws:secretsmanager:us-east-1:111122223333:secret:crm',
  CLOSE_CLIENT_ID: 'close-id',
  CAPSULE_CLIENT_ID: 'capsule-id',
};
const config = loadConfig(env);

describe('client secrets from Secrets Manager', () => {
  const calls = () => secretsMock.commandCalls(GetSecretValueCommand).length;
  afterEach(() => vi.useRealTimers());

  it('reads the secret once within its max age and serves every CRM from it', async () => {
    secretsMock
      .on(GetSecretValueCommand)
      .resolves({ SecretString: JSON.stringify({ close: 'close-secret', capsule: 'capsule-secret' }) });
    const secrets = new ConfiguredClientSecrets(config);
    expect(await secrets.clientSecret(config.providers.close)).toBe('close-secret');
    expect(await secrets.clientSecret(config.providers.capsule)).toBe('capsule-secret');
    expect(await secrets.clientSecret(config.providers.close)).toBe('close-secret');
    expect(calls()).toBe(1);
    expect(secretsMock.commandCalls(GetSecretValueCommand)[0]?.args[0].input).toEqual({
      SecretId: 'arn:aws:secretsmanager:us-east-1:111122223333:secret:crm',
    });
  });

  it('shares one read between concurrent callers (a cold scheduled refresh asks for many at once)', async () => {
    secretsMock.on(GetSecretValueCommand).resolves({ SecretString: '{"close":"close-secret"}' });
    const secrets = new ConfiguredClientSecrets(config);
    const all = await Promise.all(
      Array.from({ length: 10 }, () => secrets.clientSecret(config.providers.close)),
    );
    expect(new Set(all)).toEqual(new Set(['close-secret']));
    expect(calls()).toBe(1);
  });

  it(`reads it again once ${CLIENT_SECRETS_MAX_AGE_SECONDS} s have passed, so a rotated secret reaches warm functions`, async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: new Date('2026-01-01T00:00:00Z') });
    secretsMock
      .on(GetSecretValueCommand)
      .resolvesOnce({ SecretString: '{"close":"old-secret"}' })
      .resolves({ SecretString: '{"close":"rotated-secret"}' });
    const secrets = new ConfiguredClientSecrets(config);
    expect(await secrets.clientSecret(config.providers.close)).toBe('old-secret');
    vi.advanceTimersByTime((CLIENT_SECRETS_MAX_AGE_SECONDS - 1) * 1000);
    expect(await secrets.clientSecret(config.providers.close)).toBe('old-secret');
    expect(calls()).toBe(1);
    vi.advanceTimersByTime(2000);
    expect(await secrets.clientSecret(config.providers.close)).toBe('rotated-secret');
    expect(calls()).toBe(2);
  });

  it('with a max age of 0 reads it on every request', async () => {
    secretsMock.on(GetSecretValueCommand).resolves({ SecretString: '{"close":"close-secret"}' });
    const secrets = new ConfiguredClientSecrets(config, undefined, 0);
    await secrets.clientSecret(config.providers.close);
    await secrets.clientSecret(config.providers.close);
    expect(calls()).toBe(2);
  });

  it('reads the secret again after a CRM refused it (forget), so a fixed secret reaches warm functions', async () => {
    secretsMock
      .on(GetSecretValueCommand)
      .resolvesOnce({ SecretString: '{"close":"old-secret"}' })
      .resolves({ SecretString: '{"close":"fixed-secret"}' });
    const secrets = new ConfiguredClientSecrets(config);
    expect(await secrets.clientSecret(config.providers.close)).toBe('old-secret');
    expect(await secrets.clientSecret(config.providers.close)).toBe('old-secret');
    secrets.forget();
    expect(await secrets.clientSecret(config.providers.close)).toBe('fixed-secret');
    expect(await secrets.clientSecret(config.providers.close)).toBe('fixed-secret');
    expect(calls()).toBe(2);
  });

  it('tries again after a failed read instead of caching the failure, and passes on the SDK error', async () => {
    const throttled = Object.assign(new Error('throttled'), {
      name: 'ThrottlingException',
      $metadata: { attempts: 3 },
    });
    secretsMock
      .on(GetSecretValueCommand)
      .rejectsOnce(throttled)
      .resolves({ SecretString: '{"close":"close-secret"}' });
    const secrets = new ConfiguredClientSecrets(config);
    // The SDK's own error (with `$metadata`), not a Parameters wrapper: it is what marks a failing dependency.
    const err = await secrets.clientSecret(config.providers.close).catch((e: unknown) => e);
    expect(err).toBe(throttled);
    expect(contractError(err)?.errorType).toBe('BrokerUnavailable');
    expect(await secrets.clientSecret(config.providers.close)).toBe('close-secret');
  });

  it('after forget, a failed read still leaves the refused secret unused', async () => {
    secretsMock
      .on(GetSecretValueCommand)
      .resolvesOnce({ SecretString: '{"close":"refused-secret"}' })
      .rejectsOnce(Object.assign(new Error('throttled'), { name: 'ThrottlingException' }))
      .resolves({ SecretString: '{"close":"fixed-secret"}' });
    const secrets = new ConfiguredClientSecrets(config);
    expect(await secrets.clientSecret(config.providers.close)).toBe('refused-secret');
    secrets.forget();
    await expect(secrets.clientSecret(config.providers.close)).rejects.toThrow('throttled');
    expect(await secrets.clientSecret(config.providers.close)).toBe('fixed-secret');
    expect(calls()).toBe(3);
  });

  it('fails clearly, naming no secret, when an entry is missing or the secret is not JSON', async () => {
    secretsMock.on(GetSecretValueCommand).resolves({ SecretString: '{"capsule":"capsule-secret"}' });
    const err = await new ConfiguredClientSecrets(config)
      .clientSecret(config.providers.close)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(String((err as Error).message)).not.toContain('capsule-secret');

    // Not JSON, then fixed: the broken value is not served from the cache until it expires.
    secretsMock.reset();
    secretsMock
      .on(GetSecretValueCommand)
      .resolvesOnce({ SecretString: '{"close": close-secret-value' })
      .resolves({ SecretString: '{"close":"close-secret"}' });
    const secrets = new ConfiguredClientSecrets(config);
    const broken = await secrets.clientSecret(config.providers.close).catch((e: unknown) => e);
    expect(broken).toBeInstanceOf(ConfigError);
    expect(String((broken as Error).message)).not.toContain('close-secret-value');
    expect(String((broken as Error).cause ?? '')).not.toContain('close-secret-value');
    expect(await secrets.clientSecret(config.providers.close)).toBe('close-secret');
  });

  it('a secret in the environment (local) needs no Secrets Manager', async () => {
    const local = loadConfig({ ...env, CLIENT_SECRETS_ARN: undefined, CLOSE_CLIENT_SECRET: 'local-secret' });
    expect(await new ConfiguredClientSecrets(local).clientSecret(local.providers.close)).toBe('local-secret');
    expect(calls()).toBe(0);
  });

  it("reads with a client carrying the broker's AWS timeouts and retries", async () => {
    secretsMock.on(GetSecretValueCommand).resolves({ SecretString: '{"close":"close-secret"}' });
    await new ConfiguredClientSecrets(config).clientSecret(config.providers.close);
    const client = secretsMock.commandCalls(GetSecretValueCommand)[0]?.thisValue as SecretsManagerClient;
    expect(await client.config.maxAttempts()).toBe(AWS_MAX_ATTEMPTS);
    // NodeHttpHandler keeps its resolved options in `configProvider`.
    const handler = client.config.requestHandler as unknown as { configProvider: Promise<object> };
    expect(await handler.configProvider).toMatchObject({
      connectionTimeout: AWS_CONNECT_TIMEOUT_MS,
      requestTimeout: AWS_ATTEMPT_TIMEOUT_MS,
      throwOnRequestTimeout: true,
    });
  });
});

describe('events to EventBridge', () => {
  const event = {
    type: 'connection.needs_reauth' as const,
    detail: {
      connectionId: 'conn_x',
      ownerId: 'o',
      provider: 'close' as const,
      reason: 'invalid_grant',
      at: 'now',
    },
  };

  it('puts the event on the bus with the documented source, detail-type and detail', async () => {
    eventsMock.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: '1' }] });
    await createEventBridgePublisher('bus', new Logger()).publish(event);
    expect(eventsMock.commandCalls(PutEventsCommand)[0]?.args[0].input).toEqual({
      Entries: [
        {
          EventBusName: 'bus',
          Source: 'crm-oauth-broker',
          DetailType: 'connection.needs_reauth',
          Detail: JSON.stringify(event.detail),
        },
      ],
    });
  });

  it('never fails the request that caused it: a lost event is logged', async () => {
    eventsMock.on(PutEventsCommand).rejects(Object.assign(new Error('down'), { name: 'InternalException' }));
    const logger = new Logger();
    const logged = vi.spyOn(logger, 'error').mockImplementation(() => undefined);
    await expect(createEventBridgePublisher('bus', logger).publish(event)).resolves.toBeUndefined();
    expect(logged).toHaveBeenCalledWith(
      'event not published',
      expect.objectContaining({ errorName: 'InternalException' }),
    );
    eventsMock.on(PutEventsCommand).resolves({ FailedEntryCount: 1 });
    await createEventBridgePublisher('bus', logger).publish(event);
    expect(logged).toHaveBeenCalledTimes(2);
  });
});
