/**
 * The AWS adapters where one exact failure matters, with aws-sdk-client-mock:
 * client secrets from Secrets Manager (read once per cold start, cached) and
 * events to EventBridge (best effort, never a token).
 */
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { Logger } from '@aws-lambda-powertools/logger';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../functions/adapters/lambda/config.ts';
import { ConfigError } from '../../functions/core/domain/errors.ts';
import { createEventBridgePublisher } from '../../functions/adapters/eventbridge/events.ts';
import { ConfiguredClientSecrets } from '../../functions/adapters/secrets/client-secrets.ts';

const secretsMock = mockClient(SecretsManagerClient);
const eventsMock = mockClient(EventBridgeClient);

beforeEach(() => {
  secretsMock.reset();
  eventsMock.reset();
});
afterEach(() => vi.restoreAllMocks());

const config = loadConfig({
  KMS_KEY_ID: 'arn:aws:kms:us-east-1:111122223333:key/k',
  CLIENT_SECRETS_ARN: 'arn:aws:secretsmanager:us-east-1:111122223333:secret:crm',
  CLOSE_CLIENT_ID: 'close-id',
  CAPSULE_CLIENT_ID: 'capsule-id',
});

describe('client secrets from Secrets Manager', () => {
  it('reads the secret once per cold start and serves every CRM from it', async () => {
    secretsMock
      .on(GetSecretValueCommand)
      .resolves({ SecretString: JSON.stringify({ close: 'close-secret', capsule: 'capsule-secret' }) });
    const secrets = new ConfiguredClientSecrets(config);
    expect(await secrets.clientSecret(config.providers.close)).toBe('close-secret');
    expect(await secrets.clientSecret(config.providers.capsule)).toBe('capsule-secret');
    expect(await secrets.clientSecret(config.providers.close)).toBe('close-secret');
    expect(secretsMock.commandCalls(GetSecretValueCommand)).toHaveLength(1);
    expect(secretsMock.commandCalls(GetSecretValueCommand)[0]?.args[0].input).toEqual({
      SecretId: 'arn:aws:secretsmanager:us-east-1:111122223333:secret:crm',
    });
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
    expect(secretsMock.commandCalls(GetSecretValueCommand)).toHaveLength(2);
  });

  it('tries again after a failed read instead of caching the failure', async () => {
    secretsMock
      .on(GetSecretValueCommand)
      .rejectsOnce(Object.assign(new Error('throttled'), { name: 'ThrottlingException' }))
      .resolves({ SecretString: '{"close":"close-secret"}' });
    const secrets = new ConfiguredClientSecrets(config);
    await expect(secrets.clientSecret(config.providers.close)).rejects.toThrow('throttled');
    expect(await secrets.clientSecret(config.providers.close)).toBe('close-secret');
  });

  it('fails clearly, naming no secret, when an entry is missing or the secret is not JSON', async () => {
    secretsMock.on(GetSecretValueCommand).resolves({ SecretString: '{"capsule":"capsule-secret"}' });
    const err = await new ConfiguredClientSecrets(config)
      .clientSecret(config.providers.close)
      .catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(String(err.message)).not.toContain('capsule-secret');
    secretsMock.on(GetSecretValueCommand).resolves({ SecretString: 'not json' });
    await expect(
      new ConfiguredClientSecrets(config).clientSecret(config.providers.close),
    ).rejects.toBeInstanceOf(ConfigError);
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
