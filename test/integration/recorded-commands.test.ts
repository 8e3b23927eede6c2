/**
 * security.md row 14 from the other side: the template tests prove each role
 * holds exactly what manifest/access.ts says; this proves the functions ask
 * AWS for nothing more. Every test broker records the AWS commands each
 * function sends (and its calls to ports it is not granted) and fails its
 * `close()` on one its manifest entry does not grant, so the whole integration
 * suite checks it; here the lifecycle is driven step by step with KMS (a
 * double of its protocol) and each step's calls are pinned, and a narrowed
 * grant table shows the check failing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { functionAccess } from '../../manifest/access.ts';
import { functionNames } from '../../manifest/functions.ts';
import type { GrantTable } from '../../functions/adapters/lambda/wiring.ts';
import { connect } from '../support/flows.ts';
import { makeDue } from '../support/items.ts';
import { type KmsDouble, startKmsDouble } from '../support/kms-double.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';

const TABLE = 'table/crm-oauth-broker';

let kms: KmsDouble;
let broker: TestBroker;

beforeAll(async () => {
  kms = await startKmsDouble();
  broker = await startTestBroker({ env: { KMS_KEY_ID: kms.keyId, AWS_ENDPOINT_URL_KMS: kms.endpoint } });
});
afterAll(async () => {
  await broker?.close();
  await kms?.close();
});

/** Runs `step` and answers the `function action on resource` triples it recorded. */
async function sentBy(step: () => Promise<unknown>): Promise<string[]> {
  const before = broker.commands.mark();
  await step();
  return broker.commands.pairs(before);
}

const ok = async (out: Promise<Awaited<ReturnType<TestBroker['invoke']>>>) => {
  const answer = await out;
  expect(answer).toMatchObject({ ok: true });
  return (answer as { value: any }).value;
};

describe('what each function sends to AWS, step by step', () => {
  let connectionId: string;

  it('connect: connect-session stores a session; authorize swaps it for a state; callback consumes the state, binds the account to a new id, encrypts with a new data key and stores the connection', async () => {
    const sent = await sentBy(async () => {
      const flow = await connect(broker, 'close', { ownerId: 'owner-recorded' });
      expect(flow.final.searchParams.get('status')).toBe('connected');
      connectionId = flow.connectionId as string;
    });
    expect(sent).toEqual([
      `authorize dynamodb:DeleteItem on ${TABLE}`,
      `authorize dynamodb:PutItem on ${TABLE}`,
      `callback dynamodb:DeleteItem on ${TABLE}`,
      `callback dynamodb:GetItem on ${TABLE}`,
      `callback dynamodb:PutItem on ${TABLE}`,
      `callback dynamodb:UpdateItem on ${TABLE}`,
      'callback kms:GenerateDataKey on token key',
      `connect-session dynamodb:PutItem on ${TABLE}`,
    ]);
  });

  it('token-fetch with a refresh: reads, decrypts, leases and stores; the data key just decrypted encrypts the new tokens', async () => {
    const sent = await sentBy(() => ok(broker.invoke('token-fetch', { connectionId, forceRefresh: true })));
    expect(sent).toEqual([
      `token-fetch dynamodb:GetItem on ${TABLE}`,
      `token-fetch dynamodb:UpdateItem on ${TABLE}`,
      'token-fetch kms:Decrypt on token key',
    ]);
  });

  it('refresh: the same calls as a forced token-fetch, from a cold data-key cache of its own', async () => {
    const sent = await sentBy(() => ok(broker.invoke('refresh', { connectionId })));
    expect(sent).toEqual([
      `refresh dynamodb:GetItem on ${TABLE}`,
      `refresh dynamodb:UpdateItem on ${TABLE}`,
      'refresh kms:Decrypt on token key',
    ]);
  });

  it('connections list: one query of the byOwner index, no key', async () => {
    const sent = await sentBy(() =>
      ok(broker.invoke('connections', { action: 'list', ownerId: 'owner-recorded' })),
    );
    expect(sent).toEqual([`connections dynamodb:Query on ${TABLE}/index/byOwner`]);
  });

  it('refresh-scheduled queries the byDueTime index (never a Scan) and claims what is due; refresh-worker refreshes it', async () => {
    await makeDue(broker, connectionId);
    const sent = await sentBy(async () => {
      expect(await ok(broker.invoke('refresh-scheduled', {}))).toMatchObject({ dispatched: 1, refreshed: 1 });
    });
    expect(sent).toEqual([
      `refresh-scheduled dynamodb:Query on ${TABLE}/index/byDueTime`,
      `refresh-scheduled dynamodb:UpdateItem on ${TABLE}`,
      `refresh-worker dynamodb:GetItem on ${TABLE}`,
      `refresh-worker dynamodb:UpdateItem on ${TABLE}`,
      'refresh-worker kms:Decrypt on token key',
    ]);
  });

  it("crm-request: reads the connection, decrypts its token, takes the account's rate budget, calls the CRM", async () => {
    const sent = await sentBy(async () => {
      expect(await ok(broker.invoke('crm-request', { connectionId, path: '/me/' }))).toMatchObject({
        status: 200,
      });
    });
    expect(sent).toEqual([
      `crm-request dynamodb:GetItem on ${TABLE}`,
      `crm-request dynamodb:UpdateItem on ${TABLE}`,
      'crm-request kms:Decrypt on token key',
    ]);
  });

  it('connections delete: leases, decrypts for the revoke, deletes; never a new data key', async () => {
    const sent = await sentBy(() => ok(broker.invoke('connections', { action: 'delete', connectionId })));
    expect(sent).toEqual([
      `connections dynamodb:DeleteItem on ${TABLE}`,
      `connections dynamodb:GetItem on ${TABLE}`,
      `connections dynamodb:UpdateItem on ${TABLE}`,
      'connections kms:Decrypt on token key',
    ]);
  });

  it('every call of every step is one the manifest grants', () => {
    expect(broker.commands.violations(functionAccess)).toEqual([]);
    // And every function that ran is in the record (close() checks the same record again).
    expect(new Set(broker.commands.sent().map((s) => s.function))).toEqual(new Set(functionNames));
  });

  it("commands outside every invocation are no function's: test setup, the Scan of the demo page", async () => {
    const sent = await sentBy(async () => {
      await broker.scan();
      await broker.server.deps.store.scanConnections();
    });
    expect(sent).toEqual([]);
  });
});

describe('the check fails when a function sends what it is not granted', () => {
  /** What the code does, minus a table action of token-fetch and the token key of connections. */
  const narrowed: GrantTable = {
    ...functionAccess,
    'token-fetch': { ...functionAccess['token-fetch'], table: ['dynamodb:UpdateItem'] },
    connections: { ...functionAccess.connections, tokenKey: [] },
  };

  it('reports the function, the command and the missing grant, and close() fails', async () => {
    const narrow = await startTestBroker({ overrides: { grants: narrowed } });
    let closed = false;
    try {
      const { connectionId } = await connect(narrow, 'close', { ownerId: 'owner-narrowed' });
      expect((await narrow.invoke('token-fetch', { connectionId })).ok).toBe(true);
      // The stand-in refuses the decrypt; the revoke is best effort, so the delete still succeeds.
      expect((await narrow.invoke('connections', { action: 'delete', connectionId })).ok).toBe(true);

      expect(
        narrow.commands
          .violations(narrowed)
          .map(
            ({ sent, missing }) =>
              `${sent.function} ${sent.command}: ${missing.action} on ${missing.resource}`,
          )
          .sort(),
      ).toEqual([
        'connections tokenKey.decryptDataKey: kms:Decrypt on token key',
        `token-fetch GetItemCommand: dynamodb:GetItem on ${TABLE}`,
      ]);
      // Against the real manifest, the same calls are all granted.
      expect(narrow.commands.violations(functionAccess)).toEqual([]);

      closed = true;
      const closing = narrow.close();
      await expect(closing).rejects.toThrow(
        /token-fetch: GetItemCommand \(x\d+\) needs dynamodb:GetItem on table\/crm-oauth-broker/,
      );
      await expect(closing).rejects.toThrow(
        /connections: tokenKey\.decryptDataKey \(x1\) needs kms:Decrypt on token key/,
      );
    } finally {
      if (!closed) await narrow.close().catch(() => undefined);
    }
  });
});
