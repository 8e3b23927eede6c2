/**
 * KMS requests of one cold container that fetches many connections once each
 * (docs/key-hierarchy.md): the items as the broker wrote them before the key
 * hierarchy (v1, a KMS data key per ciphertext) against today's (v2, an
 * intermediate key per CRM and day), through the real token-fetch handler,
 * the embedded store and the KMS double with the real SDK.
 *
 *   npx tsx bench/kms-requests.ts [connections]   # alone; npm run bench runs it too
 */
import { freshConnectionFields } from './local-broker.ts';
import { BatchWriteItemCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { KMSClient } from '@aws-sdk/client-kms';
import { marshall } from '@aws-sdk/util-dynamodb';
import type { Context } from 'aws-lambda';
import { createHash } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { type BrokerDeps, createDeps } from '../functions/adapters/lambda/wiring.ts';
import { type EncryptionContext, KmsKeyProvider, encryptV1 } from '../functions/adapters/kms/envelope.ts';
import { MemoryEventLog } from '../functions/adapters/eventbridge/events.ts';
import { createLogger } from '../functions/adapters/lambda/logger.ts';
import { keys } from '../functions/adapters/dynamodb/keys.ts';
import { tokenContext } from '../functions/core/domain/token-set.ts';
import * as tokenFetch from '../functions/token-fetch.ts';
import { startEmbeddedDynamo } from '../local/embedded-store.ts';
import { ensureTable } from '../local/ensure-table.ts';
import { type KmsDouble, startKmsDouble } from '../test/support/kms-double.ts';

const credentials = { accessKeyId: 'bench', secretAccessKey: 'bench' };

export interface KmsRequestCounts {
  /** KMS GenerateDataKey calls to write the connections' tokens. */
  generateDataKeyToWrite: number;
  /** KMS Decrypt calls of a new container fetching each connection once. */
  decryptToFetch: number;
}

export interface KmsColdFetches {
  connections: number;
  before: KmsRequestCounts;
  after: KmsRequestCounts;
}

function deps(
  endpoint: string,
  kms: KmsDouble,
  tableName: string,
): { deps: BrokerDeps; keys: KmsKeyProvider } {
  const keyProvider = new KmsKeyProvider(
    new KMSClient({ endpoint: kms.endpoint, region: 'us-east-1', credentials }),
    kms.keyId,
  );
  const built = createDeps(
    {
      TABLE_NAME: tableName,
      KMS_KEY_ID: kms.keyId,
      CLOSE_CLIENT_ID: 'bench',
      CLOSE_CLIENT_SECRET: 'bench-secret',
      CLOSE_TOKEN_URL: 'http://127.0.0.1:9/oauth2/token/',
      CLOSE_API_BASE_URL: 'http://127.0.0.1:9/api/v1',
      PUBLIC_BASE_URL: 'http://localhost:3999',
    },
    {
      dynamo: new DynamoDBClient({ endpoint, region: 'us-east-1', credentials }),
      keyProvider,
      events: new MemoryEventLog(),
      logger: createLogger(),
    },
  );
  return { deps: built, keys: keyProvider };
}

/** Active Close connections an hour from expiry (a fetch never refreshes), tokens as `encrypt` writes them. */
async function seed(
  dynamo: DynamoDBClient,
  tableName: string,
  count: number,
  prefix: string,
  encrypt: (plaintext: string, context: EncryptionContext) => Promise<string>,
): Promise<string[]> {
  const now = Date.now();
  const ids: string[] = [];
  const items: Record<string, unknown>[] = [];
  for (let i = 0; i < count; i++) {
    const connectionId = `conn_${createHash('sha256').update(`${prefix}-${i}`).digest('hex').slice(0, 32)}`;
    const ctx = { connectionId, ownerId: `${prefix}-owner-${i}`, provider: 'close' as const };
    items.push({
      ...keys.connection(connectionId),
      ...ctx,
      account: { id: 'orga_1', name: 'Acme', userEmail: null },
      status: 'active',
      tokens: await encrypt(
        JSON.stringify({ accessToken: `a-${i}`, refreshToken: `r-${i}` }),
        tokenContext(ctx),
      ),
      expiresAt: now + 3600_000,
      ...freshConnectionFields(now),
      gsi1pk: keys.ownerPk(ctx.ownerId),
      gsi1sk: `CONN#${connectionId}`,
    });
    ids.push(connectionId);
  }
  for (let i = 0; i < items.length; i += 25) {
    let batch = items
      .slice(i, i + 25)
      .map((item) => ({ PutRequest: { Item: marshall(item, { removeUndefinedValues: true }) } }));
    while (batch.length) {
      const out = await dynamo.send(new BatchWriteItemCommand({ RequestItems: { [tableName]: batch } }));
      batch = (out.UnprocessedItems?.[tableName] ?? []) as typeof batch;
    }
  }
  return ids;
}

const context = { functionName: 'token-fetch', awsRequestId: 'bench' } as unknown as Context;

/** `n` connections written as v1 and as v2 items; a new container fetches each once; KMS requests counted. */
export async function kmsColdFetches(endpoint: string, kms: KmsDouble, n: number): Promise<KmsColdFetches> {
  const measure = async (version: 'v1' | 'v2'): Promise<KmsRequestCounts> => {
    const table = `bench-kms-cold-${version}`;
    const writer = deps(endpoint, kms, table);
    await ensureTable(writer.deps.store.client, table);
    kms.reset();
    const ids = await seed(writer.deps.store.client, table, n, version, (p, c) =>
      version === 'v1' ? encryptV1(writer.keys, p, c) : writer.deps.envelope.encrypt(p, c),
    );
    const generateDataKeyToWrite = kms.calls.GenerateDataKey;
    const handler = tokenFetch.createHandler(deps(endpoint, kms, table).deps); // a new container: nothing cached
    kms.reset();
    for (const connectionId of ids) {
      const out = (await handler({ connectionId }, context)) as { accessToken?: string };
      if (!out.accessToken) throw new Error('token-fetch returned no token');
    }
    return { generateDataKeyToWrite, decryptToFetch: kms.calls.Decrypt };
  };
  return { connections: n, before: await measure('v1'), after: await measure('v2') };
}

/** The figures as rows of the benchmark's tables. */
export function kmsRows(r: KmsColdFetches) {
  const per1000 = (calls: number) => `${(calls / r.connections) * 1000} (${calls} in all)`;
  return [
    {
      figure: 'KMS Decrypt per 1,000 fetches, v1 items (a data key each)',
      measured: per1000(r.before.decryptToFetch),
      target: 'before: 1,000',
      verdict: '' as const,
    },
    {
      figure: 'KMS Decrypt per 1,000 fetches, v2 items (one CRM, one day)',
      measured: per1000(r.after.decryptToFetch),
      target: '1 per CRM and day of keys read',
      verdict: r.after.decryptToFetch <= 1 ? ('PASS' as const) : ('MISS' as const),
    },
    {
      figure: 'KMS GenerateDataKey to write the items, v1 / v2',
      measured: `${r.before.generateDataKeyToWrite} / ${r.after.generateDataKeyToWrite}`,
      target: 'v2: 1 per CRM and day',
      verdict: r.after.generateDataKeyToWrite <= 1 ? ('PASS' as const) : ('MISS' as const),
    },
  ];
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
  process.env.POWERTOOLS_METRICS_DISABLED = 'true';
  process.env.POWERTOOLS_LOG_LEVEL = 'ERROR';
  const n = Number(process.argv[2] ?? 10_000);
  const kms = await startKmsDouble();
  const store = await startEmbeddedDynamo({});
  try {
    const r = await kmsColdFetches(store.endpoint, kms, n);
    console.log(`\n## KMS requests, ${n.toLocaleString('en')} connections x 1 fetch, one cold container`);
    console.table(kmsRows(r));
  } finally {
    await store.close();
    await kms.close();
  }
}
