/**
 * A failing AWS dependency (throttled table, throttled key service) is the
 * contract's `BrokerUnavailable`: retry later, the connection is untouched.
 * Anything else unexpected stays an opaque `InternalError`.
 */
import { DynamoDBClient, GetItemCommand } from '@aws-sdk/client-dynamodb';
import { DecryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { marshall } from '@aws-sdk/util-dynamodb';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createHandler } from '../../functions/token-fetch.ts';
import { createDeps } from '../../functions/adapters/lambda/wiring.ts';
import {
  BrokerError,
  BrokerUnavailable,
  ConnectionNotFound,
  NeedsReauth,
  contractError,
  isDependencyFailure,
} from '../../functions/core/domain/errors.ts';
import { keys } from '../../functions/adapters/dynamodb/keys.ts';
import { lambdaContext } from '../../local/lambda-events.ts';

/** An error as it leaves an SDK client's `send` after its retries: named, with `$metadata`. */
const sdkError = (name: string, fault: 'client' | 'server' = 'client') =>
  Object.assign(new Error(`${name} (simulated)`), {
    name,
    $fault: fault,
    $metadata: { httpStatusCode: fault === 'client' ? 400 : 500, attempts: 3, totalRetryDelay: 600 },
  });

describe('which failures are failing dependencies', () => {
  it('counts an AWS SDK error carrying $metadata', () => {
    const err = Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException', $metadata: {} });
    expect(isDependencyFailure(err)).toBe(true);
    expect(contractError(err)).toBeInstanceOf(BrokerUnavailable);
  });

  it('counts an AWS SDK error carrying only $fault', () => {
    const err = Object.assign(new Error('timed out'), { name: 'TimeoutError', $fault: 'client' });
    expect(isDependencyFailure(err)).toBe(true);
    expect(contractError(err)).toBeInstanceOf(BrokerUnavailable);
  });

  it('keeps the SDK error as the cause, out of the message', () => {
    const err = sdkError('ProvisionedThroughputExceededException');
    const typed = contractError(err);
    expect(typed?.cause).toBe(err);
    expect(typed?.message).not.toContain('ProvisionedThroughputExceededException');
  });

  it('does not count a failed condition: that is an answer the code handles', () => {
    const err = sdkError('ConditionalCheckFailedException');
    expect(isDependencyFailure(err)).toBe(false);
    expect(contractError(err)).toBeUndefined();
  });

  it('passes a broker error through as it is', () => {
    for (const err of [new ConnectionNotFound(), new NeedsReauth(), new BrokerUnavailable()]) {
      expect(isDependencyFailure(err)).toBe(false);
      expect(contractError(err)).toBe(err);
    }
  });

  it('does not count a broker error that happens to carry $metadata', () => {
    const err = Object.assign(new NeedsReauth(), { $metadata: {} });
    expect(isDependencyFailure(err)).toBe(false);
    expect(contractError(err)).toBe(err);
  });

  it('leaves a plain error, or something that is not an error, without a contract error', () => {
    for (const err of [new Error('bug'), new TypeError('x is undefined'), 'string', null, undefined, 42]) {
      expect(isDependencyFailure(err)).toBe(false);
      expect(contractError(err)).toBeUndefined();
    }
  });
});

const dynamoMock = mockClient(DynamoDBClient);
const kmsMock = mockClient(KMSClient);

beforeEach(() => {
  dynamoMock.reset();
  kmsMock.reset();
});
afterEach(() => vi.restoreAllMocks());

const connectionId = `conn_${'a'.repeat(32)}`;
const b64 = (s: string) => Buffer.from(s).toString('base64url');

/** A stored connection whose token never expires, so token-fetch only reads and decrypts it. */
const storedConnection = (tokens: unknown) => ({
  Item: marshall({
    ...keys.connection(connectionId),
    connectionId,
    ownerId: 'owner_1',
    provider: 'close',
    account: { id: 'orga_1' },
    status: 'active',
    tokens,
    expiresAt: null,
    issuedLifetimeSeconds: null,
    lastRefreshedAt: null,
    lastError: null,
    refreshFailures: 0,
    version: 1,
    createdAt: 1,
    updatedAt: 1,
  }),
});

/** token-fetch as deployed with a KMS key, its table and key service mocked. */
function tokenFetch() {
  const deps = createDeps(
    { KMS_KEY_ID: 'arn:aws:kms:us-east-1:111122223333:key/k', CLOSE_CLIENT_ID: 'close-id' },
    { dynamo: new DynamoDBClient({ region: 'us-east-1' }) },
  );
  const logged = vi.spyOn(deps.logger, 'error').mockImplementation(() => undefined);
  const counted = vi.spyOn(deps.metrics, 'perFunction');
  const handler = createHandler(deps);
  const invoke = () =>
    handler({ connectionId }, lambdaContext('token-fetch', 100_000)).then(
      () => {
        throw new Error('token-fetch answered');
      },
      (err: unknown) => err as Error,
    );
  return { invoke, logged, counted };
}

describe('token-fetch when a dependency fails', () => {
  it('answers BrokerUnavailable when reading the table is throttled', async () => {
    // Prepare
    dynamoMock.on(GetItemCommand).rejects(sdkError('ThrottlingException'));
    const { invoke, counted } = tokenFetch();
    // Act
    const err = await invoke();
    // Assess
    expect(err.name).toBe('BrokerUnavailable');
    expect(err).toBeInstanceOf(BrokerError);
    expect(counted).toHaveBeenCalledWith('RequestsRefused', 'token-fetch');
    expect(counted).not.toHaveBeenCalledWith('UnexpectedFailures', 'token-fetch');
  });

  it('answers BrokerUnavailable when the table has a server error', async () => {
    dynamoMock.on(GetItemCommand).rejects(sdkError('InternalServerError', 'server'));
    const { invoke } = tokenFetch();
    expect((await invoke()).name).toBe('BrokerUnavailable');
  });

  it('answers BrokerUnavailable when KMS Decrypt is throttled', async () => {
    // Prepare: a never-expiring token, so only the decrypt stands between the read and the answer.
    dynamoMock
      .on(GetItemCommand)
      .resolves(storedConnection(`v1.kms.${b64('encrypted data key')}.${b64('x'.repeat(40))}`));
    kmsMock.on(DecryptCommand).rejects(sdkError('ThrottlingException'));
    const { invoke } = tokenFetch();
    // Act
    const err = await invoke();
    // Assess
    expect(err.name).toBe('BrokerUnavailable');
    expect(kmsMock.commandCalls(DecryptCommand)).toHaveLength(1);
  });

  it('answers ConnectionNotFound, not BrokerUnavailable, when the table answers with no item', async () => {
    dynamoMock.on(GetItemCommand).resolves({});
    const { invoke } = tokenFetch();
    expect((await invoke()).name).toBe('ConnectionNotFound');
  });

  it('answers an opaque InternalError for a bug, logged by name only', async () => {
    // Prepare: a stored item whose tokens are not a string makes the code itself throw (a TypeError).
    dynamoMock.on(GetItemCommand).resolves(storedConnection(42));
    const { invoke, logged, counted } = tokenFetch();
    // Act
    const err = await invoke();
    // Assess
    expect(err.name).toBe('InternalError');
    expect(err.message).toBe('Internal error');
    expect(logged).toHaveBeenCalledWith('unexpected failure', { errorName: 'TypeError' });
    expect(counted).toHaveBeenCalledWith('UnexpectedFailures', 'token-fetch');
  });

  it('answers InternalError, not BrokerUnavailable, for a plain error without SDK metadata', async () => {
    dynamoMock.on(GetItemCommand).rejects(new Error('not from the SDK'));
    const { invoke } = tokenFetch();
    expect((await invoke()).name).toBe('InternalError');
  });
});
