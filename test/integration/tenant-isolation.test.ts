/**
 * security.md row 21, the id and owner parts: connection ids are random and
 * looked up, never computed; a service call that names an owner reaches only
 * that owner's connections, and a wrong owner changes nothing.
 */
import { DeleteItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keys } from '../../functions/adapters/dynamodb/keys.ts';
import { legacyConnectionIdFor } from '../../functions/core/domain/connection-id.ts';
import { connect } from '../support/flows.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';

let broker: TestBroker;

beforeAll(async () => {
  broker = await startTestBroker();
});
afterAll(async () => broker?.close());

type Invoked = Awaited<ReturnType<TestBroker['invoke']>>;
const value = (out: Invoked) => {
  if (!out.ok) throw new Error(`${out.errorType}: ${out.errorMessage}`);
  return out.value;
};

async function connected(ownerId: string, provider = 'close'): Promise<string> {
  const { final, connectionId } = await connect(broker, provider, { ownerId });
  expect(final.searchParams.get('status')).toBe('connected');
  return connectionId as string;
}

const closeRefreshes = () => broker.server.sandbox.calls().close?.['token:refresh_token'] ?? 0;
const item = async (connectionId: string) =>
  (await broker.scan()).find((i) => i.pk === `CONN#${connectionId}`) as Record<string, unknown> | undefined;

describe('connection ids are random and looked up (row 21)', () => {
  it('a new connection gets conn_ and 32 hex digits that do not derive from owner, CRM and account', async () => {
    const id = await connected('owner-random');
    expect(id).toMatch(/^conn_[0-9a-f]{32}$/);
    const record = value(await broker.invoke('connections', { action: 'get', connectionId: id }));
    expect(id).not.toBe(legacyConnectionIdFor('owner-random', 'close', record.account.id));
  });

  it('reconnecting the same account for the same owner keeps the id; another owner gets another id', async () => {
    const first = await connected('owner-keep');
    expect(await connected('owner-keep')).toBe(first);
    expect(await connected('owner-other')).not.toBe(first);
  });

  it('after delete, reconnecting the same account and owner gives a new id', async () => {
    const first = await connected('owner-delete');
    expect(value(await broker.invoke('connections', { action: 'delete', connectionId: first }))).toEqual({
      connectionId: first,
      deleted: true,
    });
    const second = await connected('owner-delete');
    expect(second).not.toBe(first);
    expect(second).toMatch(/^conn_[0-9a-f]{32}$/);
  });

  it('a connection stored before ids were random keeps its id on reconnect', async () => {
    // Make the state of a table from before the change: the connection under its computed id, no binding.
    const random = await connected('owner-legacy');
    const record = await broker.server.deps.store.getConnection(random);
    if (!record) throw new Error('no record');
    const legacy = legacyConnectionIdFor('owner-legacy', 'close', record.account.id);
    const { connectionId: _r, createdAt: _c, version: _v, leaseOwner: _o, leaseUntil: _u, ...rest } = record;
    await broker.server.deps.store.upsertConnection({ ...rest, connectionId: legacy }, undefined);
    await broker.server.dynamo.send(
      new DeleteItemCommand({
        TableName: broker.server.deps.config.tableName,
        Key: marshall(keys.account('owner-legacy', 'close', record.account.id)),
      }),
    );
    await broker.server.deps.store.deleteConnection(random);

    expect(await connected('owner-legacy')).toBe(legacy);
    expect(
      value(await broker.invoke('token-fetch', { connectionId: legacy, ownerId: 'owner-legacy' })),
    ).toMatchObject({
      connectionId: legacy,
    });
  });
});

describe('ownerId on every service call (row 21)', () => {
  let connectionId: string;
  let before: Record<string, unknown> | undefined;

  beforeAll(async () => {
    connectionId = await connected('owner-tenant-a');
    before = await item(connectionId);
  });

  it.each([
    ['token-fetch', { forceRefresh: true }],
    ['refresh', {}],
    ['connections', { action: 'get' }],
    ['connections', { action: 'delete' }],
  ])('%s %j with another owner: ConnectionNotFound, nothing changed, no CRM call', async (name, extra) => {
    const refreshes = closeRefreshes();
    const out = await broker.invoke(name, { ...extra, connectionId, ownerId: 'owner-tenant-b' });
    expect(out).toMatchObject({ ok: false, errorType: 'ConnectionNotFound' });
    expect(await item(connectionId)).toEqual(before);
    expect(closeRefreshes()).toBe(refreshes);
  });

  it('the refresh route with another owner in its body: 404, nothing changed', async () => {
    const refreshes = closeRefreshes();
    const res = await fetch(`${broker.server.url}/connections/${connectionId}/refresh`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ ownerId: 'owner-tenant-b' }),
    });
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ errorType: 'ConnectionNotFound' });
    expect(await item(connectionId)).toEqual(before);
    expect(closeRefreshes()).toBe(refreshes);
  });

  it('a wrong owner is answered exactly as an id that does not exist', async () => {
    const missing = await broker.invoke('token-fetch', {
      connectionId: `conn_${'0'.repeat(32)}`,
      ownerId: 'x',
    });
    const wrong = await broker.invoke('token-fetch', { connectionId, ownerId: 'x' });
    expect(wrong).toEqual(missing);
  });

  it('the right owner gets the token, refreshes and reads it', async () => {
    const token = value(await broker.invoke('token-fetch', { connectionId, ownerId: 'owner-tenant-a' }));
    expect(token.accessToken).toEqual(expect.any(String));
    const refreshed = value(await broker.invoke('refresh', { connectionId, ownerId: 'owner-tenant-a' }));
    expect(refreshed.connectionId).toBe(connectionId);
    const res = await fetch(`${broker.server.url}/connections/${connectionId}/refresh`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ ownerId: 'owner-tenant-a' }),
    });
    expect(res.status).toBe(200);
    expect(
      value(await broker.invoke('connections', { action: 'get', connectionId, ownerId: 'owner-tenant-a' })),
    ).toMatchObject({ connectionId, ownerId: 'owner-tenant-a' });
  });

  it('an invalid ownerId is InvalidRequest', async () => {
    expect(await broker.invoke('token-fetch', { connectionId, ownerId: '' })).toMatchObject({
      ok: false,
      errorType: 'InvalidRequest',
    });
  });

  it('the right owner deletes it', async () => {
    expect(
      value(
        await broker.invoke('connections', { action: 'delete', connectionId, ownerId: 'owner-tenant-a' }),
      ),
    ).toEqual({ connectionId, deleted: true });
    expect(await item(connectionId)).toBeUndefined();
  });
});
