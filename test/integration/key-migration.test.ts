/**
 * Items written before the key hierarchy (v1: a data key per ciphertext) stay
 * readable and move to v2 on their next token write: a Close refresh, and
 * Copper's check, whose token never expires (docs/key-hierarchy.md).
 */
import { randomBytes } from 'node:crypto';
import { GetItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalKeyProvider, encryptV1 } from '../../functions/adapters/kms/envelope.ts';
import { tokenContext } from '../../functions/core/domain/token-set.ts';
import { connect } from '../support/flows.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';

const keys = new LocalKeyProvider(randomBytes(32).toString('base64'));
let broker: TestBroker;

beforeAll(async () => {
  broker = await startTestBroker({ overrides: { keyProvider: keys } });
}, 60_000);
afterAll(async () => {
  await broker?.close();
});

async function storedTokens(connectionId: string): Promise<string> {
  const out = await broker.server.dynamo.send(
    new GetItemCommand({
      TableName: broker.server.deps.config.tableName,
      Key: { pk: { S: `CONN#${connectionId}` }, sk: { S: 'CONN' } },
    }),
  );
  return out.Item?.tokens?.S as string;
}

/** Rewrites the item's tokens as the broker stored them before the key hierarchy. */
async function downgradeToV1(connectionId: string, ownerId: string, provider: 'copper' | 'close') {
  const context = tokenContext({ connectionId, ownerId, provider });
  const plaintext = await broker.server.deps.envelope.decrypt(await storedTokens(connectionId), context);
  await broker.server.dynamo.send(
    new UpdateItemCommand({
      TableName: broker.server.deps.config.tableName,
      Key: { pk: { S: `CONN#${connectionId}` }, sk: { S: 'CONN' } },
      UpdateExpression: 'SET tokens = :t',
      ExpressionAttributeValues: { ':t': { S: await encryptV1(keys, plaintext, context) } },
    }),
  );
  expect(await storedTokens(connectionId)).toMatch(/^v1\.local\./);
}

describe('v1 items move to v2 on their next token write', () => {
  it.each(['copper', 'close'] as const)(
    '%s: served from v1, rewritten as v2 by its refresh or check',
    async (provider) => {
      const ownerId = `owner-migrate-${provider}`;
      const { connectionId } = await connect(broker, provider, { ownerId });
      const id = connectionId as string;
      expect(await storedTokens(id)).toMatch(/^v2\.local\./);
      const before = await broker.invoke('token-fetch', { connectionId: id });
      expect(before.ok).toBe(true);
      await downgradeToV1(id, ownerId, provider);

      // Still served while v1.
      const fromV1 = await broker.invoke('token-fetch', { connectionId: id });
      expect(fromV1).toMatchObject({
        ok: true,
        value: { accessToken: (before as { value: any }).value.accessToken },
      });

      // The next write of the tokens: Close refreshes, Copper's token is checked and re-encrypted.
      expect(await broker.invoke('refresh', { connectionId: id })).toMatchObject({ ok: true });
      expect(await storedTokens(id)).toMatch(/^v2\.local\./);
      const after = await broker.invoke('token-fetch', { connectionId: id });
      expect(after.ok).toBe(true);
      if (provider === 'copper') {
        expect((after as { value: any }).value.accessToken).toBe(
          (before as { value: any }).value.accessToken,
        );
      }
    },
  );
});
