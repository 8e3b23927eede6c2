/**
 * Each function is wired from its manifest entry (manifest/access.ts), the
 * entry its IAM role is made from: the token key, the client secrets and the
 * event bus only where granted, and where not, a stand-in that fails loudly,
 * naming the function and the port, instead of an AccessDenied in AWS.
 */
import { randomBytes } from 'node:crypto';
import type { Context } from 'aws-lambda';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { type FunctionAccess, functionAccess } from '../../manifest/access.ts';
import { type FunctionName, functionEntry, functionNames } from '../../manifest/functions.ts';
import {
  type BrokerDeps,
  PortNotGranted,
  type UngrantedCall,
  createDeps,
  depsFor,
  lambdaHandler,
} from '../../functions/adapters/lambda/wiring.ts';
import { tokenContext } from '../../functions/core/domain/token-set.ts';

/** The refresh queues of a deployment (the dispatcher checks them at cold start). */
const queueUrls = {
  REFRESH_QUEUE_URL_COPPER: 'https://sqs.us-east-1.amazonaws.com/111122223333/refresh-copper',
  REFRESH_QUEUE_URL_CAPSULE: 'https://sqs.us-east-1.amazonaws.com/111122223333/refresh-capsule',
  REFRESH_QUEUE_URL_CLOSE: 'https://sqs.us-east-1.amazonaws.com/111122223333/refresh-close',
};
/** As deployed: a KMS key, the secrets in Secrets Manager, an event bus. Nothing here reaches AWS. */
const deployed = {
  KMS_KEY_ID: 'arn:aws:kms:us-east-1:111122223333:key/k',
  CLIENT_SECRETS_ARN: 'arn:aws:secretsmanager:us-east-1:111122223333:secret:client-secrets',
  EVENT_BUS_NAME: 'broker-events',
  CLOSE_CLIENT_ID: 'close-id',
  ...queueUrls,
};
/** As run locally: the local master key, the secrets in the environment. */
const local = {
  LOCAL_MASTER_KEY: randomBytes(32).toString('base64'),
  CLOSE_CLIENT_ID: 'close-id',
  CLOSE_CLIENT_SECRET: 'close-secret',
};
const context = tokenContext({ connectionId: 'conn_1', ownerId: 'owner-1', provider: 'close' });
const event = { connectionId: 'conn_1', ownerId: 'owner-1', provider: 'close' as const, at: 'now' };

/** The AWS clients a function's wiring builds at cold start (the Secrets Manager client comes on first read). */
function clientsBuiltFor(name: FunctionName): string[] {
  const built: string[] = [];
  depsFor(name, deployed, { observer: { awsClient: (client) => built.push(client.constructor.name) } });
  return built.sort();
}

const expectedClients = (access: FunctionAccess) =>
  [
    'DynamoDBClient',
    ...(access.tokenKey ? ['KMSClient'] : []),
    ...(access.events ? ['EventBridgeClient'] : []),
    ...(access.refreshQueues === 'send' ? ['SQSClient'] : []),
  ].sort();

describe('a function gets the AWS clients its manifest entry grants, and no others', () => {
  it.each(functionNames)('%s', (name) => {
    expect(clientsBuiltFor(name)).toEqual(expectedClients(functionAccess[name]));
  });
});

describe('a port the function is not granted throws, naming the function and the port', () => {
  const heard: UngrantedCall[] = [];
  const wired = (name: FunctionName, fetch: typeof globalThis.fetch = vi.fn()) =>
    depsFor(name, local, { fetch, observer: { ungranted: (call) => heard.push(call) } });
  afterEach(() => {
    heard.length = 0;
  });

  it('connect-session has no token key', async () => {
    const deps = wired('connect-session');
    const err = await deps.envelope.encrypt('tokens', context).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PortNotGranted);
    expect((err as Error).message).toBe(
      "connect-session called tokenKey.generateDataKey (kms:GenerateDataKey), which functionAccess['connect-session'].tokenKey in manifest/access.ts does not grant it",
    );
    expect(heard).toEqual([
      {
        function: 'connect-session',
        port: 'tokenKey',
        call: 'generateDataKey',
        action: 'kms:GenerateDataKey',
      },
    ]);
  });

  it('connect-session may neither decrypt nor make a data key', async () => {
    const sealed = await createDeps(local).envelope.encrypt('tokens', context);
    const deps = wired('connect-session');
    await expect(deps.envelope.decrypt(sealed, context)).rejects.toThrow(
      /^connect-session called tokenKey\.decryptDataKey \(kms:Decrypt\)/,
    );
    await expect(deps.envelope.encrypt('tokens', { ...context, ownerId: 'other' })).rejects.toThrow(
      /^connect-session called tokenKey\.generateDataKey \(kms:GenerateDataKey\)/,
    );
  });

  it('connections may decrypt (to revoke) and make a data key (to store a confirmed connection)', async () => {
    const sealed = await createDeps(local).envelope.encrypt('tokens', context);
    const deps = wired('connections');
    expect(await deps.envelope.decrypt(sealed, context)).toBe('tokens');
    const own = await deps.envelope.encrypt('tokens', { ...context, ownerId: 'other' });
    expect(await deps.envelope.decrypt(own, { ...context, ownerId: 'other' })).toBe('tokens');
  });

  it('a function with no token key refuses to decrypt too, at the key, not as a corrupt ciphertext', async () => {
    const sealed = await createDeps(local).envelope.encrypt('tokens', context);
    await expect(wired('authorize').envelope.decrypt(sealed, context)).rejects.toThrow(
      /^authorize called tokenKey\.decryptDataKey \(kms:Decrypt\)/,
    );
  });

  it('authorize has the client ids (for the authorize URL) but no client secret: no token request is sent', async () => {
    const fetch = vi.fn();
    const deps = wired('authorize', fetch);
    await expect(
      deps.oauth.exchangeCode(deps.config.providers.close, { code: 'c', redirectUri: 'https://x.test/cb' }),
    ).rejects.toThrow(
      /^authorize called clientSecrets\.clientSecret \(secretsmanager:GetSecretValue\), which functionAccess\['authorize'\]\.clientSecrets/,
    );
    expect(fetch).not.toHaveBeenCalled();
  });

  it('only the dispatcher may send to the refresh queues: a worker refuses (sqs:SendMessage)', async () => {
    const message = {
      kind: 'refresh',
      connectionId: 'c',
      provider: 'close',
      dueAt: 1,
    } as const;
    await expect(wired('refresh-worker').refreshQueue.send([message])).rejects.toThrow(
      /^refresh-worker called refreshQueues\.send \(sqs:SendMessage\)/,
    );
    expect(heard.map((c) => `${c.function} ${c.port}`)).toEqual(['refresh-worker refreshQueues']);
  });

  it('the dispatcher reads no client secret and publishes no events: no CRM call, no event from it', async () => {
    const fetch = vi.fn();
    const deps = depsFor('refresh-scheduled', { ...local, ...queueUrls }, { fetch });
    await expect(deps.oauth.prepare(deps.config.providers.close)).rejects.toThrow(
      /^refresh-scheduled called clientSecrets\.clientSecret/,
    );
    await expect(deps.events.publish({ type: 'connection.recovered', detail: event })).rejects.toThrow(
      /^refresh-scheduled called events\.publish/,
    );
    expect(fetch).not.toHaveBeenCalled();
    expect(functionAccess['refresh-scheduled'].tokenKey).toBeUndefined();
  });

  it('a dispatcher deployed without its queue URLs fails at cold start, not at its first run', () => {
    const { REFRESH_QUEUE_URL_CLOSE: _close, ...missing } = deployed;
    expect(() => depsFor('refresh-scheduled', missing)).toThrow(/REFRESH_QUEUE_URL_CLOSE/);
  });

  it('authorize publishes no events', async () => {
    await expect(
      wired('authorize').events.publish({ type: 'connection.created', detail: event }),
    ).rejects.toThrow(/^authorize called events\.publish \(events:PutEvents\)/);
    expect(heard.map((c) => `${c.function} ${c.port}`)).toEqual(['authorize events']);
  });

  it('granted ports are the real ones: token-fetch encrypts, decrypts and publishes', async () => {
    const deps = wired('token-fetch');
    expect(await deps.envelope.decrypt(await deps.envelope.encrypt('tokens', context), context)).toBe(
      'tokens',
    );
    await deps.events.publish({ type: 'connection.recovered', detail: event });
    expect(heard).toEqual([]);
  });

  it('a narrowed grant table is honoured (tests use it to see a missing grant fail)', async () => {
    const deps = depsFor('token-fetch', local, {
      grants: { ...functionAccess, 'token-fetch': { ...functionAccess['token-fetch'], events: false } },
    });
    await expect(deps.events.publish({ type: 'connection.recovered', detail: event })).rejects.toThrow(
      PortNotGranted,
    );
  });
});

describe('lambdaHandler wires the deps of the function it names', () => {
  afterEach(() => {
    vi.unstubAllEnvs();
  });
  const lambdaContext = {} as Context;

  it("lambdaHandler('connect-session', create) hands create the deps of connect-session", async () => {
    vi.stubEnv('LOCAL_MASTER_KEY', local.LOCAL_MASTER_KEY);
    const handler = lambdaHandler(
      'connect-session',
      (deps: BrokerDeps) => async () =>
        deps.envelope.encrypt('tokens', context).then(
          () => 'encrypted',
          (err: Error) => err.name,
        ),
    );
    expect(handler.functionName).toBe('connect-session');
    expect(await handler({}, lambdaContext)).toBe('PortNotGranted');
  });

  it.each(functionNames)('the %s module names its own function', async (name) => {
    const module = (await import(/* @vite-ignore */ `../../${functionEntry(name)}`)) as {
      handler: { functionName?: string };
    };
    expect(module.handler.functionName).toBe(name);
  });
});
