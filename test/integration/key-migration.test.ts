/**
 * Items written before the key hierarchy (v1: a data key per ciphertext) stay
 * readable and move to v2 on their next token write: a Close refresh, and
 * Copper's check, whose token never expires (docs/key-hierarchy.md). Those
 * items hold their tokens as text (a String attribute): they move to the
 * packed Binary form with the same write (docs/table-design.md).
 */
import { randomBytes } from 'node:crypto';
import { GetItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { unpackTokens } from '../../functions/adapters/dynamodb/token-attribute.ts';
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

/** The item's tokens as stored: the attribute's type (String or Binary) and the envelope text it holds. */
async function storedTokens(connectionId: string): Promise<{ type: 'S' | 'B'; text: string }> {
  const out = await broker.server.dynamo.send(
    new GetItemCommand({
      TableName: broker.server.deps.config.tableName,
      Key: { pk: { S: `CONN#${connectionId}` }, sk: { S: 'CONN' } },
    }),
  );
  const tokens = out.Item?.tokens;
  if (tokens?.S !== undefined) return { type: 'S', text: tokens.S };
  if (tokens?.B !== undefined) return { type: 'B', text: unpackTokens(tokens.B) };
  throw new Error(`no tokens stored for ${connectionId}`);
}

/** Rewrites the item's tokens as the broker stored them before the key hierarchy. */
async function downgradeToV1(connectionId: string, ownerId: string, provider: 'copper' | 'close') {
  const context = tokenContext({ connectionId, ownerId, provider });
  const plaintext = await broker.server.deps.envelope.decrypt(
    (await storedTokens(connectionId)).text,
    context,
  );
  await broker.server.dynamo.send(
    new UpdateItemCommand({
      TableName: broker.server.deps.config.tableName,
      Key: { pk: { S: `CONN#${connectionId}` }, sk: { S: 'CONN' } },
      UpdateExpression: 'SET tokens = :t',
      ExpressionAttributeValues: { ':t': { S: await encryptV1(keys, plaintext, context) } },
    }),
  );
  expect(await storedTokens(connectionId)).toEqual({
    type: 'S',
    text: expect.stringMatching(/^v1\.local\./),
  });
}

describe('v1 items move to v2 on their next token write', () => {
  it.each(['copper', 'close'] as const)(
    '%s: served from v1, rewritten as v2 by its refresh or check',
    async (provider) => {
      const ownerId = `owner-migrate-${provider}`;
      const { connectionId } = await connect(broker, provider, { ownerId });
      const id = connectionId as string;
      expect(await storedTokens(id)).toEqual({ type: 'B', text: expect.stringMatching(/^v2\.local\./) });
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
      expect(await storedTokens(id)).toEqual({ type: 'B', text: expect.stringMatching(/^v2\.local\./) });
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

describe('items with their tokens as text move to Binary on their next token write', () => {
  it('a v2 envelope stored as a String (before the packed form) is served, then rewritten packed', async () => {
    const { connectionId } = await connect(broker, 'close', { ownerId: 'owner-text-tokens' });
    const id = connectionId as string;
    const packed = await storedTokens(id);
    expect(packed).toEqual({ type: 'B', text: expect.stringMatching(/^v2\.local\./) });
    const before = await broker.invoke('token-fetch', { connectionId: id });
    expect(before.ok).toBe(true);
    await broker.server.dynamo.send(
      new UpdateItemCommand({
        TableName: broker.server.deps.config.tableName,
        Key: { pk: { S: `CONN#${id}` }, sk: { S: 'CONN' } },
        UpdateExpression: 'SET tokens = :t',
        ExpressionAttributeValues: { ':t': { S: packed.text } },
      }),
    );
    expect(await storedTokens(id)).toEqual({ type: 'S', text: packed.text });

    // Served from the text form; the connection reads as before.
    expect(await broker.invoke('token-fetch', { connectionId: id })).toMatchObject({
      ok: true,
      value: { accessToken: (before as { value: any }).value.accessToken },
    });
    expect(await broker.invoke('connections', { action: 'get', connectionId: id })).toMatchObject({
      ok: true,
      value: { connectionId: id },
    });

    // The refresh writes new tokens, packed.
    expect(await broker.invoke('refresh', { connectionId: id })).toMatchObject({ ok: true });
    const after = await storedTokens(id);
    expect(after).toEqual({ type: 'B', text: expect.stringMatching(/^v2\.local\./) });
    expect(after.text).not.toBe(packed.text);
    expect(await broker.invoke('token-fetch', { connectionId: id })).toMatchObject({ ok: true });
  });
});
