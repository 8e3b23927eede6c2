/**
 * The broker against AWS's own DynamoDB Local and a double of KMS's JSON
 * protocol, through the real SDK clients: the connect flow per CRM, envelope
 * encryption with KMS (security.md row 13), the data-key cache, KMS faults,
 * and the state's one conditional delete under concurrency (row 3).
 */
import { type AttributeValue, GetItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packTokens, unpackTokens } from '../../functions/adapters/dynamodb/token-attribute.ts';
import { Browser } from '../support/browser.ts';
import { type DynamoDbLocal, startDynamoDbLocal } from '../support/dynamodb-local.ts';
import { connect, returnToOf } from '../support/flows.ts';
import { type KmsDouble, startKmsDouble } from '../support/kms-double.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';
import { storedItemsText } from '../support/stored-items.ts';

let ddb: DynamoDbLocal;
let kms: KmsDouble;
let broker: TestBroker;

beforeAll(async () => {
  [ddb, kms] = await Promise.all([startDynamoDbLocal(), startKmsDouble()]);
  broker = await startTestBroker({ env: coldEnv() });
}, 120_000);
afterAll(async () => {
  await broker?.close();
  await kms?.close();
  await ddb?.close();
});

const ids: Record<string, string> = {};

describe('connect flow on DynamoDB Local with KMS', () => {
  it.each(['copper', 'capsule', 'close'])('%s: connects and fetches a working token', async (provider) => {
    const { final, connectionId } = await connect(broker, provider, { ownerId: 'owner-aws' });
    expect(final.searchParams.get('status')).toBe('connected');
    ids[provider] = connectionId as string;
    const out = await broker.invoke('token-fetch', { connectionId });
    expect(out.ok).toBe(true);
    const token = (out as { value: any }).value;
    const path = { copper: '/account', capsule: '/users/current', close: '/me/' }[provider];
    expect((await fetch(`${token.apiBaseUrl}${path}`, { headers: token.headers })).status).toBe(200);
  });

  it('stores only KMS envelopes: no token in plaintext anywhere in the table', async () => {
    const items = await broker.scan();
    const dump = storedItemsText(items);
    for (const connectionId of Object.values(ids)) {
      const token = (await broker.invoke('token-fetch', { connectionId })) as { value: any };
      expect(dump).not.toContain(token.value.accessToken);
      // A v2 KMS envelope, packed into Binary.
      const stored = items.find((i) => i.pk === `CONN#${connectionId}`)?.tokens;
      expect(stored).toBeInstanceOf(Uint8Array);
      const envelope = unpackTokens(stored as Uint8Array);
      expect(envelope).toMatch(/^v2\.kms\./);
      expect(Buffer.from(stored as Uint8Array)).toEqual(Buffer.from(packTokens(envelope)));
    }
  });

  it('a warm token-fetch makes no KMS call: 0 per 1,000 fetches after the first', async () => {
    const connectionId = ids.close as string;
    await broker.invoke('token-fetch', { connectionId });
    kms.reset();
    for (let i = 0; i < 1000; i++) {
      const out = await broker.server.invoke('token-fetch', { connectionId });
      expect(out).toHaveProperty('accessToken');
    }
    expect(kms.calls).toEqual({ GenerateDataKey: 0, Decrypt: 0, Encrypt: 0 });
  });
});

describe("row 13: a ciphertext moved to another connection's item", () => {
  it('fails to decrypt, and nothing is returned', async () => {
    const table = broker.server.deps.config.tableName;
    const from = ids.close as string;
    const to = ids.capsule as string;
    const source = await broker.server.dynamo.send(
      new GetItemCommand({ TableName: table, Key: { pk: { S: `CONN#${from}` }, sk: { S: 'CONN' } } }),
    );
    // Copied as stored (Binary), so the copy is the ciphertext itself, not a re-encoding of it.
    expect(source.Item?.tokens?.B).toBeInstanceOf(Uint8Array);
    await broker.server.dynamo.send(
      new UpdateItemCommand({
        TableName: table,
        Key: { pk: { S: `CONN#${to}` }, sk: { S: 'CONN' } },
        UpdateExpression: 'SET tokens = :t',
        ExpressionAttributeValues: { ':t': source.Item?.tokens as AttributeValue },
      }),
    );
    const out = await broker.invoke('token-fetch', { connectionId: to });
    expect(out.ok).toBe(false);
    expect(out).not.toHaveProperty('value');
    expect(JSON.stringify(out)).not.toMatch(/accessToken/);
    // A fresh broker, with nothing cached, refuses it too: one Decrypt, refused at KMS (Close's intermediate
    // key under Capsule's context); within one CRM the HKDF derivation and the GCM associated data refuse it.
    const cold = await startTestBroker({ env: coldEnv() });
    try {
      kms.reset();
      expect((await cold.invoke('token-fetch', { connectionId: to })).ok).toBe(false);
      expect(kms.calls.Decrypt).toBe(1);
    } finally {
      await cold.close();
    }
  });
});

function coldEnv() {
  return {
    AWS_ENDPOINT_URL_DYNAMODB: ddb.endpoint,
    KMS_KEY_ID: kms.keyId,
    AWS_ENDPOINT_URL_KMS: kms.endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'local',
    AWS_SECRET_ACCESS_KEY: 'local',
  };
}

describe('KMS faults', () => {
  it('a throttled KMS is retried by the SDK; a persistently failing one is a clean error that writes nothing', async () => {
    const cold = await startTestBroker({ env: coldEnv() });
    try {
      kms.reset();
      kms.failNext('Decrypt', 'ThrottlingException', 1);
      expect(await cold.invoke('token-fetch', { connectionId: ids.copper })).toMatchObject({ ok: true });
      const before = JSON.stringify(await cold.scan());
      // The key ring already holds today's intermediate keys: unwrapping one (Decrypt) fails as well.
      kms.failNext('GenerateDataKey', 'KMSInternalException', 10);
      kms.failNext('Decrypt', 'KMSInternalException', 10);
      const { final } = await connect(cold, 'capsule', { ownerId: 'owner-kms-down' });
      expect(final.searchParams.get('status')).toBe('error');
      const after = await cold.scan();
      expect(after.filter((i) => i.ownerId === 'owner-kms-down' && String(i.pk).startsWith('CONN#'))).toEqual(
        [],
      );
      expect(JSON.stringify(after.filter((i) => String(i.pk).startsWith('CONN#')))).toBe(
        JSON.stringify(JSON.parse(before).filter((i: any) => String(i.pk).startsWith('CONN#'))),
      );
    } finally {
      kms.reset();
      await cold.close();
    }
  });
});

describe('row 3 on DynamoDB Local: the state is consumed once', () => {
  it('the same callback twice at once: one success, one 400', async () => {
    const session = await broker.invoke('connect-session', {
      ownerId: 'owner-replay',
      provider: 'close',
      returnTo: returnToOf(broker),
    });
    const browser = new Browser();
    const consentPage = await browser.goto((session as { value: any }).value.connectUrl);
    const answer = await browser.submit(consentPage, /allow/i);
    const callback = answer.headers.get('location') as string;
    expect(callback).toContain('/callback/close');
    const results = await Promise.all([browser.request(callback), browser.request(callback)]);
    expect(results.map((r) => r.status).sort()).toEqual([302, 400]);
  });
});
