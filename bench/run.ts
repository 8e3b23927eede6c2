/**
 * `npm run bench`: the broker's overhead, measured on this machine against the
 * embedded store (dynalite) and DynamoDB Local, with a KMS double and a CRM
 * stub of known latency. Prints one table per figure with its target and
 * writes `bench/results/latest.json`. Never part of `npm test`.
 *
 *   npm run bench                      # everything (a few minutes on 2 cores)
 *   BENCH_SIZES=1000,10000 npm run bench   # smaller scheduler tables
 */
import { freshConnectionFields, seededDueAt } from './local-broker.ts';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { BatchWriteItemCommand, DynamoDBClient, GetItemCommand } from '@aws-sdk/client-dynamodb';
import { KMSClient } from '@aws-sdk/client-kms';
import { marshall } from '@aws-sdk/util-dynamodb';
import type { Context } from 'aws-lambda';
import * as callback from '../functions/callback.ts';
import * as authorize from '../functions/authorize.ts';
import * as connectSession from '../functions/connect-session.ts';
import { legacyConnectionIdFor as connectionIdFor } from '../functions/core/domain/connection-id.ts';
import { tokenContext } from '../functions/core/domain/token-set.ts';
import { type BrokerDeps, createDeps } from '../functions/adapters/lambda/wiring.ts';
import { KmsKeyProvider } from '../functions/adapters/kms/envelope.ts';
import { MemoryEventLog } from '../functions/adapters/eventbridge/events.ts';
import { createLogger } from '../functions/adapters/lambda/logger.ts';
import { functionEntry, functionNames } from '../manifest/functions.ts';
import { dueSlot } from '../functions/core/domain/due-slot.ts';
import { refreshPipeline, writeCalibration } from './refresh-pipeline.ts';
import { duePkOf, keys } from '../functions/adapters/dynamodb/keys.ts';
import type { Store } from '../functions/adapters/dynamodb/store.ts';
import { providerIds } from '../functions/core/domain/providers.ts';
import { DUE_SHARDS } from '../manifest/table.ts';
import { fetchToken } from '../functions/core/use-cases/fetch-token.ts';
import * as tokenFetch from '../functions/token-fetch.ts';
import { startEmbeddedDynamo } from '../local/embedded-store.ts';
import { ensureTable } from '../local/ensure-table.ts';
import { startDynamoDbLocal } from '../test/support/dynamodb-local.ts';
import { type KmsDouble, startKmsDouble } from '../test/support/kms-double.ts';
import { bundle, timeImports } from './bundle.ts';
import { kmsColdFetches, kmsRows } from './kms-requests.ts';
import { clientTokenCache } from './client-cache.ts';
import { crmRequestBench } from './crm-request.ts';
import { rateBudgetBench } from './rate-budget.ts';
import { runRefreshModel } from './model/run-model.ts';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
process.env.POWERTOOLS_METRICS_DISABLED = 'true';
process.env.POWERTOOLS_LOG_LEVEL = 'ERROR';

const OUT = join('bench', 'results');
mkdirSync(OUT, { recursive: true });
const results: Record<string, unknown> = {
  machine: { cpus: 2, node: process.version },
  at: new Date().toISOString(),
};
const credentials = { accessKeyId: 'bench', secretAccessKey: 'bench' };

type Row = { figure: string; measured: string; target: string; verdict: 'PASS' | 'MISS' | '' };
function printTable(title: string, rows: Row[]) {
  console.log(`\n## ${title}`);
  console.table(rows);
}
const verdict = (ok: boolean): 'PASS' | 'MISS' => (ok ? 'PASS' : 'MISS');
const pct = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;
const ms = (n: number) => `${n.toFixed(3)} ms`;

/** Counts operations per command name on an SDK client. */
function counted<C extends { middlewareStack: DynamoDBClient['middlewareStack'] }>(client: C) {
  const counts: Record<string, number> = {};
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const name = String(context.commandName);
      counts[name] = (counts[name] ?? 0) + 1;
      return next(args);
    },
    { step: 'initialize', name: 'benchCount' },
  );
  return counts;
}
const total = (c: Record<string, number>) => Object.values(c).reduce((a, b) => a + b, 0);
const reset = (c: Record<string, number>) => {
  for (const k of Object.keys(c)) delete c[k];
};

/** A CRM token endpoint with fixed latency and rotating refresh tokens; counts calls. */
async function startCrm(latencyMs: number) {
  const crm = { calls: 0, url: '', close: async () => {} };
  const server: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      crm.calls++;
      setTimeout(() => {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(
          JSON.stringify(
            req.url?.includes('/me/')
              ? { id: 'user_1', email: 'a@b.test', organizations: [{ id: 'orga_1', name: 'Acme' }] }
              : {
                  access_token: randomBytes(24).toString('base64url'),
                  refresh_token: randomBytes(24).toString('base64url'),
                  token_type: 'Bearer',
                  expires_in: 3600,
                  organization_id: 'orga_1',
                },
          ),
        );
      }, latencyMs);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  crm.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  crm.close = () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r())));
  return crm;
}

function brokerDeps(endpoint: string, kms: KmsDouble, crmUrl: string, tableName: string) {
  const dynamo = new DynamoDBClient({ endpoint, region: 'us-east-1', credentials });
  const kmsClient = new KMSClient({ endpoint: kms.endpoint, region: 'us-east-1', credentials });
  const dynamoCalls = counted(dynamo);
  const deps = createDeps(
    {
      TABLE_NAME: tableName,
      KMS_KEY_ID: kms.keyId,
      CLOSE_CLIENT_ID: 'bench',
      CLOSE_CLIENT_SECRET: 'bench-secret',
      CLOSE_TOKEN_URL: `${crmUrl}/oauth2/token/`,
      CLOSE_API_BASE_URL: `${crmUrl}/api/v1`,
      PUBLIC_BASE_URL: 'http://localhost:3999',
    },
    {
      dynamo,
      keyProvider: new KmsKeyProvider(kmsClient, kms.keyId),
      events: new MemoryEventLog(),
      logger: createLogger(),
    },
  );
  return { deps, dynamo, dynamoCalls };
}

/** Writes connections straight into the table (BatchWriteItem), encrypted as the broker would. */
async function seed(
  deps: BrokerDeps,
  dynamo: DynamoDBClient,
  count: number,
  dueEvery: number,
  prefix: string,
) {
  const now = deps.now();
  // One real envelope per seeded table is enough for reads; refreshes re-encrypt with their own context.
  const ids: string[] = [];
  const put: Record<string, unknown>[] = [];
  for (let i = 0; i < count; i++) {
    const ownerId = `${prefix}-${i}`;
    const connectionId = connectionIdFor(ownerId, 'close', 'orga_1');
    const due = i % dueEvery === 0;
    const expiresAt = due ? now + 60_000 : now + 3600_000;
    const ctx = { connectionId, ownerId, provider: 'close' as const };
    put.push({
      ...keys.connection(connectionId),
      ...ctx,
      account: { id: 'orga_1', name: 'Acme', userEmail: null },
      status: 'active',
      tokens: await deps.envelope.encrypt(
        JSON.stringify({ accessToken: 'a', refreshToken: `r-${i}` }),
        tokenContext(ctx),
      ),
      expiresAt,
      ...freshConnectionFields(now),
      gsi1pk: keys.ownerPk(ownerId),
      gsi1sk: `CONN#${connectionId}`,
      ...(due
        ? { dueAt: seededDueAt(now, Math.floor(i / dueEvery)) }
        : dueSlot(deps.config, { expiresAt, refreshable: true, now, issuedLifetimeSeconds: 3600 })),
      duePk: duePkOf(connectionId, 'close'),
    });
    ids.push(connectionId);
  }
  const batches: Record<string, unknown>[][] = [];
  for (let i = 0; i < put.length; i += 25) batches.push(put.slice(i, i + 25));
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < batches.length) {
        const batch = batches[next++] as Record<string, unknown>[];
        let items = batch.map((item) => ({
          PutRequest: { Item: marshall(item, { removeUndefinedValues: true }) },
        }));
        while (items.length) {
          const out = await dynamo.send(
            new BatchWriteItemCommand({ RequestItems: { [deps.config.tableName]: items } }),
          );
          items = (out.UnprocessedItems?.[deps.config.tableName] ?? []) as typeof items;
        }
      }
    }),
  );
  return ids;
}

const context = (name: string): Context =>
  ({
    functionName: name,
    awsRequestId: 'bench',
    getRemainingTimeInMillis: () => 30_000,
  }) as unknown as Context;

// 1. token-fetch, warm, against the raw GetItem of the same item.
async function tokenFetchWarm(storeName: string, endpoint: string, kms: KmsDouble, crmUrl: string) {
  const table = `bench-fetch-${storeName.replace(/\W/g, '')}`;
  const { deps, dynamo, dynamoCalls } = brokerDeps(endpoint, kms, crmUrl, table);
  await ensureTable(dynamo, table);
  const [id] = await seed(deps, dynamo, 1, 1_000_000_000, `fetch-${storeName}`);
  const connectionId = id as string;
  // Far from expiry: this measures the read path, not a refresh.
  await deps.store.updateConnection(
    { connectionId, provider: 'close' },
    { expiresAt: Date.now() + 3600_000 },
    {},
  );
  const handler = tokenFetch.createHandler(deps);
  const key = { TableName: table, Key: marshall(keys.connection(connectionId)), ConsistentRead: true };
  for (let i = 0; i < 200; i++) {
    await handler({ connectionId }, context('token-fetch'));
    await dynamo.send(new GetItemCommand(key));
  }
  kms.reset();
  reset(dynamoCalls);
  const n = 1000;
  const fetchMs: number[] = [];
  const readMs: number[] = [];
  // Interleaved, so both see the same machine state.
  for (let i = 0; i < n; i++) {
    let t = performance.now();
    await handler({ connectionId }, context('token-fetch'));
    fetchMs.push(performance.now() - t);
    t = performance.now();
    await dynamo.send(new GetItemCommand(key));
    readMs.push(performance.now() - t);
  }
  fetchMs.sort((a, b) => a - b);
  readMs.sort((a, b) => a - b);
  const kmsCalls = kms.calls.Decrypt + kms.calls.GenerateDataKey + kms.calls.Encrypt;
  const dynamoPerFetch = (total(dynamoCalls) - n) / n; // minus the raw reads
  const r = {
    fetchMedianMs: pct(fetchMs, 0.5),
    fetchP99Ms: pct(fetchMs, 0.99),
    getItemMedianMs: pct(readMs, 0.5),
    getItemP99Ms: pct(readMs, 0.99),
    medianRatio: pct(fetchMs, 0.5) / pct(readMs, 0.5),
    p99Ratio: pct(fetchMs, 0.99) / pct(readMs, 0.99),
    kmsCallsPer1000: (kmsCalls / n) * 1000,
    dynamoCallsPerFetch: dynamoPerFetch,
  };
  printTable(`1. token-fetch, warm (${storeName}, ${n} fetches)`, [
    {
      figure: 'median: token-fetch / GetItem',
      measured: `${ms(r.fetchMedianMs)} / ${ms(r.getItemMedianMs)} = ${r.medianRatio.toFixed(2)}x`,
      target: '<= 1.5x',
      verdict: verdict(r.medianRatio <= 1.5),
    },
    {
      figure: 'p99: token-fetch / GetItem',
      measured: `${ms(r.fetchP99Ms)} / ${ms(r.getItemP99Ms)} = ${r.p99Ratio.toFixed(2)}x`,
      target: '<= 1.5x',
      verdict: verdict(r.p99Ratio <= 1.5),
    },
    {
      figure: 'KMS calls per 1,000 fetches after the first',
      measured: String(r.kmsCallsPer1000),
      target: '0',
      verdict: verdict(r.kmsCallsPer1000 === 0),
    },
    {
      figure: 'DynamoDB calls per fetch',
      measured: r.dynamoCallsPerFetch.toFixed(2),
      target: '1',
      verdict: verdict(r.dynamoCallsPerFetch === 1),
    },
  ]);
  return r;
}

// 2. 50 concurrent fetches of an expiring connection, CRM at 100 ms.
async function contention(endpoint: string, kms: KmsDouble) {
  const crm = await startCrm(100);
  const table = 'bench-contention';
  const { deps, dynamo } = brokerDeps(endpoint, kms, crm.url, table);
  await ensureTable(dynamo, table);
  const [solo, contended] = (await seed(deps, dynamo, 2, 1, 'contention')) as [string, string];
  // One refresh alone, for reference.
  const t = performance.now();
  await fetchToken(deps, { connectionId: solo, minValiditySeconds: 300, forceRefresh: false });
  const oneRefreshMs = performance.now() - t;
  crm.calls = 0;
  const latencies = await Promise.all(
    Array.from({ length: 50 }, async () => {
      const start = performance.now();
      const answer = await fetchToken(deps, {
        connectionId: contended,
        minValiditySeconds: 300,
        forceRefresh: false,
      });
      return { ms: performance.now() - start, token: answer.accessToken };
    }),
  );
  const slowest = Math.max(...latencies.map((l) => l.ms));
  const distinct = new Set(latencies.map((l) => l.token)).size;
  const r = {
    crmCalls: crm.calls,
    oneRefreshMs,
    slowestMs: slowest,
    ratio: slowest / oneRefreshMs,
    distinctTokens: distinct,
  };
  printTable('2. Refresh under contention (50 concurrent fetches, CRM at 100 ms)', [
    { figure: 'CRM calls', measured: String(r.crmCalls), target: '1', verdict: verdict(r.crmCalls === 1) },
    {
      figure: 'distinct tokens handed out',
      measured: String(distinct),
      target: '1',
      verdict: verdict(distinct === 1),
    },
    {
      figure: 'slowest caller / one refresh',
      measured: `${ms(slowest)} / ${ms(oneRefreshMs)} = ${r.ratio.toFixed(2)}x`,
      target: 'about 1x (+ one poll, 50-100 ms)',
      verdict: verdict(slowest <= oneRefreshMs + 200),
    },
  ]);
  await crm.close();
  return r;
}

// 3. Scheduler scaling: items read per due connection (3b, the refresh pipeline, is bench/refresh-pipeline.ts).
/** Every connection due now, from each CRM partition of the due index, as the dispatcher reads them. */
async function findEveryDue(store: Store, nowSeconds: number) {
  const ids: string[] = [];
  let itemsRead = 0;
  for (const provider of providerIds) {
    for (let shard = 0; shard < DUE_SHARDS; shard++) {
      const page = await store.findDueAfter(provider, shard, undefined, nowSeconds, undefined, 100_000);
      ids.push(...page.entries.map((e) => e.connectionId));
      itemsRead += page.itemsRead;
    }
  }
  return { ids, itemsRead };
}

async function scheduler(endpoint: string, kms: KmsDouble, sizes: number[]) {
  // Only finding due connections is measured here: no CRM is called.
  const crm = { url: 'http://127.0.0.1:9' };
  const rows: Row[] = [];
  const out: Record<string, unknown>[] = [];
  for (const size of sizes) {
    const table = `bench-sched-${size}`;
    const { deps, dynamo } = brokerDeps(endpoint, kms, crm.url, table);
    await ensureTable(dynamo, table);
    const t0 = performance.now();
    await seed(deps, dynamo, size, 100, `sched-${size}`);
    const seedS = (performance.now() - t0) / 1000;
    const due = await findEveryDue(deps.store, Math.floor(Date.now() / 1000));
    const perDue = due.itemsRead / due.ids.length;
    out.push({
      size,
      due: due.ids.length,
      itemsRead: due.itemsRead,
      itemsReadPerDue: perDue,
      seedSeconds: seedS,
    });
    rows.push({
      figure: `${size.toLocaleString('en')} connections, ${due.ids.length} due`,
      measured: `${due.itemsRead} items read = ${perDue.toFixed(2)} per due`,
      target: 'about 1 per due, flat',
      verdict: verdict(perDue <= 1.05),
    });
  }
  printTable('3. Scheduler scaling (1% due)', rows);
  return { sizes: out };
}

// 4. Cold start: bundle size and import time of each function vs a bare DynamoDB handler.
async function coldStart() {
  const dir = join(OUT, 'bundles');
  mkdirSync(dir, { recursive: true });
  const bare = join(dir, 'bare-entry.ts');
  writeFileSync(
    bare,
    "import { DynamoDBClient } from '@aws-sdk/client-dynamodb';\nconst db = new DynamoDBClient({});\nexport const handler = async () => db.config.region;\n",
  );
  const entries: [string, string][] = [
    ['bare (DynamoDB client only)', bare],
    ...functionNames.map((n) => [n, functionEntry(n)] as [string, string]),
  ];
  const env = {
    ...process.env,
    AWS_LAMBDA_FUNCTION_NAME: 'bench',
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'x',
    AWS_SECRET_ACCESS_KEY: 'x',
    KMS_KEY_ID: 'arn:aws:kms:us-east-1:111122223333:key/bench',
    TABLE_NAME: 'bench',
    PUBLIC_BASE_URL: 'https://broker.example',
    CLOSE_CLIENT_ID: 'x',
    // The dispatcher checks its queue URLs at cold start, as deployed.
    ...Object.fromEntries(
      ['COPPER', 'CAPSULE', 'CLOSE'].map((p) => [
        `REFRESH_QUEUE_URL_${p}`,
        `https://sqs.us-east-1.amazonaws.com/111122223333/refresh-${p.toLowerCase()}`,
      ]),
    ),
  };
  const outfiles = entries.map(([name]) => join(dir, `${name.split(' ')[0]}.mjs`));
  const kibs: number[] = [];
  for (const [i, [, entry]] of entries.entries()) kibs.push(await bundle(entry, outfiles[i] as string));
  // Every bundle imported once per round, in turn: the machine's busy spells fall on all alike.
  const importMs = timeImports(outfiles, env);
  const rows = entries.map(([name], i) => ({
    fn: name,
    kib: kibs[i] as number,
    importMs: importMs[i] as number,
  }));
  const bareMs = rows[0]?.importMs as number;
  const tf = rows.find((r) => r.fn === 'token-fetch');
  printTable(
    '4. Cold start (minified ESM bundle; median of 9 rounds of fresh-process imports, each bundle once a round, init included)',
    rows.map((r) => ({
      figure: r.fn,
      measured: `${r.kib} KiB, ${r.importMs.toFixed(1)} ms (${(r.importMs / bareMs).toFixed(2)}x bare)`,
      target: r.fn === 'token-fetch' ? '<= 1.5x bare' : '',
      verdict: r.fn === 'token-fetch' ? verdict(r.importMs / bareMs <= 1.5) : '',
    })),
  );
  return { functions: rows, tokenFetchRatio: (tf?.importMs ?? NaN) / bareMs };
}

// 5. Callback: store and KMS operations per completed connection, and throughput with a zero-latency CRM.
async function callbackPath(endpoint: string, kms: KmsDouble) {
  const crm = await startCrm(0);
  const table = 'bench-callback';
  const { deps, dynamo, dynamoCalls } = brokerDeps(endpoint, kms, crm.url, table);
  await ensureTable(dynamo, table);
  const session = connectSession.createHandler(deps);
  const auth = authorize.createHandler(deps);
  const cb = callback.createHandler(deps);
  const http = (path: string, query: string, cookie?: string) =>
    ({
      version: '2.0',
      rawPath: path,
      rawQueryString: query,
      queryStringParameters: Object.fromEntries(new URLSearchParams(query)),
      pathParameters: { provider: 'close' },
      headers: {},
      ...(cookie ? { cookies: [cookie] } : {}),
      requestContext: { http: { method: 'GET', path } },
      isBase64Encoded: false,
    }) as never;
  const once = async (i: number) => {
    const s = (await session(
      { ownerId: `cb-${i}`, provider: 'close' } as never,
      context('connect-session'),
    )) as { connectUrl: string };
    const a = (await auth(
      http('/connect/close', new URL(s.connectUrl).search.slice(1)),
      context('authorize'),
    )) as {
      headers: Record<string, string>;
      cookies: string[];
    };
    const state = new URL(a.headers.Location as string).searchParams.get('state') as string;
    const cookie = (a.cookies[0] as string).split(';')[0] as string;
    const t = performance.now();
    const r = (await cb(
      http('/callback/close', `state=${state}&code=code-${i}`, cookie),
      context('callback'),
    )) as { statusCode: number };
    if (r.statusCode !== 200) throw new Error(`callback answered ${r.statusCode}`);
    return performance.now() - t;
  };
  await once(-1);
  reset(dynamoCalls);
  kms.reset();
  await once(0);
  const perConnection = { ...dynamoCalls };
  const kmsPer = { ...kms.calls };
  const n = 300;
  const t = performance.now();
  for (let i = 1; i <= n; i++) await once(i);
  const perSecond = n / ((performance.now() - t) / 1000);
  printTable('5. Callback path (connect-session + authorize + callback, CRM stubbed at 0 ms)', [
    {
      figure: 'DynamoDB operations per connection',
      measured: JSON.stringify(perConnection),
      target: '4 (put session, consume session, put state, consume state) + 1 write',
      verdict: '',
    },
    {
      figure: 'KMS operations per connection',
      measured: JSON.stringify(kmsPer),
      target: "0: the day's intermediate key is cached (docs/key-hierarchy.md)",
      verdict: verdict(kmsPer.GenerateDataKey === 0 && kmsPer.Decrypt === 0),
    },
    {
      figure: 'full flows per second, sequential, one process',
      measured: perSecond.toFixed(0),
      target: '',
      verdict: '',
    },
  ]);
  await crm.close();
  return { dynamoPerConnection: perConnection, kmsPerConnection: kmsPer, flowsPerSecond: perSecond };
}

const sizes = (process.env.BENCH_SIZES ?? '1000,10000,100000').split(',').map(Number);
const started = performance.now();
// 4 first: fresh processes timed while no store, JVM or broker of the other sections runs beside them.
results.coldStart = await coldStart();
const kms = await startKmsDouble();
const embedded = await startEmbeddedDynamo({});
const crmIdle = await startCrm(0);
console.log('starting DynamoDB Local...');
const ddbLocal = await startDynamoDbLocal();
try {
  results.tokenFetchWarm = {
    embedded: await tokenFetchWarm('embedded store', embedded.endpoint, kms, crmIdle.url),
    dynamoDbLocal: await tokenFetchWarm('DynamoDB Local', ddbLocal.endpoint, kms, crmIdle.url),
  };
  // 1b. KMS requests of a cold container fetching many connections once each, v1 items vs v2.
  const kmsConnections = Number(process.env.BENCH_KMS_CONNECTIONS ?? 2000);
  results.kmsColdFetches = await kmsColdFetches(embedded.endpoint, kms, kmsConnections);
  printTable(
    `1b. KMS requests, ${kmsConnections.toLocaleString('en')} connections x 1 fetch, one cold container`,
    kmsRows(results.kmsColdFetches as Awaited<ReturnType<typeof kmsColdFetches>>),
  );
  results.contention = await contention(embedded.endpoint, kms);
  results.scheduler = await scheduler(embedded.endpoint, kms, sizes);
  // 3b/3c. The refresh pipeline with the real code at 100,000 connections, 10% due (bench/refresh-pipeline.ts).
  results.refreshPipeline = await refreshPipeline(printTable);
  writeCalibration(OUT, results.refreshPipeline as Awaited<ReturnType<typeof refreshPipeline>>);
  results.callback = await callbackPath(embedded.endpoint, kms);
  // The client library's token cache against a local broker (bench/client-cache.ts).
  results.clientTokenCache = await clientTokenCache(printTable);
  // crm-request against the Close sandbox at 100 ms: calls per second, store commands over a direct call.
  results.crmRequest = await crmRequestBench(printTable);
  // The shared rate budget: 50 callers of one CRM account allowing 10 per second (bench/rate-budget.ts).
  results.rateBudget = await rateBudgetBench(printTable);
} finally {
  await ddbLocal.close();
  await embedded.close();
  await kms.close();
  await crmIdle.close();
}
// 6. The refresh pipeline model at 1M and 10M connections (bench/model, docs/performance-model.md).
results.refreshModel = runRefreshModel(printTable);
results.totalSeconds = (performance.now() - started) / 1000;
writeFileSync(join(OUT, 'latest.json'), JSON.stringify(results, null, 2));
console.log(`\nwrote ${join(OUT, 'latest.json')} in ${(results.totalSeconds as number).toFixed(0)} s`);
