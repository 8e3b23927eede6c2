/**
 * `npm run bench`, section 3b: the refresh pipeline with the real code at
 * 100,000 connections, 10% of them due: the `refresh-scheduled` handler
 * (dispatcher) hands them to the in-process queue
 * (local/refresh-queue.ts), which drives the `refresh-worker` handler with a
 * worker cap, against the embedded store and a CRM stub of 100 ms, both in a
 * child process (bench/pipeline-servers.ts) so this process's CPU time is the
 * broker's. Measures index items read per due connection, refreshes per
 * second against the worker cap, double refreshes, and the per-refresh costs a
 * simulation is calibrated from (bench/results/refresh-calibration.json).
 *
 * Sampling: one dispatch queues all 10,000; a second finds none (the
 * partitions' cursors have passed them while their messages wait). Then each cap in
 * BENCH_PIPELINE_CAPS (default 1,2,4,8,16) works off 40 x cap of the messages
 * (40 batches for one worker, 2.5 for sixteen: every worker stays busy), and
 * double refreshes are counted over every message worked off. The embedded
 * store does a few hundred operations a second on this machine, so working
 * off all 10,000 takes minutes: BENCH_PIPELINE_ALL=1 does, at twice the last cap.
 *
 * DynamoDB capacity units per refresh (3c): the same handlers, dispatcher ->
 * queue -> workers, once more on BENCH_CAPACITY_CONNECTIONS (default 1,000,
 * 10% due) in DynamoDB Local, the store that reports index units (dynalite
 * does not: bench/capacity-probe.ts). The dispatcher and the workers each get
 * a client metered by bench/dynamo-capacity.ts: the units printed are
 * DynamoDB's rules applied to the items measured before and after each write
 * (failed conditional writes and empty pages included, which no store
 * reports), checked against DynamoDB Local's reports. Apart from the timed
 * runs above, since metering reads each item around each write. Alone, smaller:
 *
 *   BENCH_PIPELINE_CONNECTIONS=2000 BENCH_PIPELINE_CAPS=1,2 npx tsx bench/refresh-pipeline.ts
 */
import { freshConnectionFields, seededDueAt } from './local-broker.ts';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createInterface } from 'node:readline';
import { BatchWriteItemCommand, DynamoDBClient, GetItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type { Context, SQSEvent } from 'aws-lambda';
import { awsClientOptions } from '../functions/adapters/aws-clients.ts';
import { duePkOf, keys } from '../functions/adapters/dynamodb/keys.ts';
import { packTokens, unpackTokens } from '../functions/adapters/dynamodb/token-attribute.ts';
import { MemoryEventLog } from '../functions/adapters/eventbridge/events.ts';
import { createLogger } from '../functions/adapters/lambda/logger.ts';
import { type BrokerDeps, depsFor } from '../functions/adapters/lambda/wiring.ts';
import { dueSlot } from '../functions/core/domain/due-slot.ts';
import type { QueueMessage } from '../functions/core/domain/refresh-queue.ts';
import { tokenContext } from '../functions/core/domain/token-set.ts';
import * as refreshScheduled from '../functions/refresh-scheduled.ts';
import * as refreshWorker from '../functions/refresh-worker.ts';
import { ensureTable } from '../local/ensure-table.ts';
import { lambdaContext } from '../local/lambda-events.ts';
import { LocalRefreshQueue, type WorkerAnswer } from '../local/refresh-queue.ts';
import { functionSettings } from '../manifest/functions.ts';
import { DEFAULT_WORKER_CAPS } from '../manifest/refresh-queues.ts';
import { tableDefinition } from '../manifest/table.ts';
import { startDynamoDbLocal } from '../test/support/dynamodb-local.ts';
import {
  type CapacityBucket,
  type CapacityMeter,
  type Item,
  type Units,
  addUnits,
  emptyUnits,
  itemSize,
  meterCapacity,
  totalUnits,
} from './dynamo-capacity.ts';

type Row = { figure: string; measured: string; target: string; verdict: 'PASS' | 'MISS' | '' };
const verdict = (ok: boolean): 'PASS' | 'MISS' => (ok ? 'PASS' : 'MISS');
const CRM_LATENCY_MS = 100;
const TABLE = 'bench-pipeline';
const CAPACITY_TABLE = 'bench-capacity';

/**
 * docs/costs.md's DynamoDB units per refresh, the targets of 3c: update them
 * with the document. Its split: nothing per connection from the dispatcher (its
 * cursors cost per run), the worker's lease 1, the result 1 + 1 (`byOwner`) + 2 (`byDueTime`).
 */
export const COSTS_MD_PER_REFRESH = {
  writeUnits: 5,
  readUnits: 1.04,
  dispatcherWriteUnits: 0,
  leaseWriteUnits: 1,
  resultWriteUnits: 4,
  /** Items under 1 KB: each table write 1 unit, as docs/costs.md counts them. */
  itemBytes: 1024,
};
/**
 * A KMS CiphertextBlob of a 256-bit data key, as deployed. The local key
 * provider wraps an intermediate key in 60 bytes (iv, tag, key), so the
 * connection items measured here are smaller than deployed ones by the difference.
 */
const KMS_WRAPPED_KEY_BYTES = 184;

/** Starts the store and the CRM stub in a child process; answers their endpoints. */
async function startServers(): Promise<{ dynamo: string; crm: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join('bench', 'pipeline-servers.ts')], {
    env: { ...process.env, CRM_LATENCY_MS: String(CRM_LATENCY_MS) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const line = await new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`pipeline servers exited (${code})`)));
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', resolve);
  });
  return { ...(JSON.parse(line) as { dynamo: string; crm: string }), child };
}

/** Counts the commands a DynamoDB client sends, by name. */
function counted(client: DynamoDBClient): Record<string, number> {
  const counts: Record<string, number> = {};
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const name = String(context.commandName).replace(/Command$/, '');
      counts[name] = (counts[name] ?? 0) + 1;
      return next(args);
    },
    { step: 'initialize', name: 'pipelineCount' },
  );
  return counts;
}
const snapshot = (c: Record<string, number>) => ({ ...c });
const since = (now: Record<string, number>, before: Record<string, number>): Record<string, number> =>
  Object.fromEntries(
    Object.entries(now)
      .map(([k, v]) => [k, v - (before[k] ?? 0)])
      .filter(([, v]) => v !== 0),
  );
const sum = (c: Record<string, number>) => Object.values(c).reduce((a, b) => a + b, 0);
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** 100,000 Close connections, every `dueEvery`-th due now; only the due ones carry real envelopes. */
async function seed(
  deps: BrokerDeps,
  dynamo: DynamoDBClient,
  table: string,
  count: number,
  dueEvery: number,
) {
  const now = deps.now();
  const due: string[] = [];
  const items: Record<string, unknown>[] = [];
  for (let i = 0; i < count; i++) {
    const ownerId = `pipeline-${i}`;
    const connectionId = `conn_${randomBytes(16).toString('hex')}`;
    const isDue = i % dueEvery === 0;
    const expiresAt = isDue ? now + 60_000 : now + 3600_000;
    const ctx = { connectionId, ownerId, provider: 'close' as const };
    items.push({
      ...keys.connection(connectionId),
      ...ctx,
      account: { id: `orga_${i}`, name: 'Acme', userEmail: isDue ? `user-${i}@example.com` : null },
      status: 'active',
      // Never read unless due: the others are what a table of idle connections looks like to the index.
      // The due ones packed, as the store writes them (token-attribute.ts).
      tokens: isDue
        ? packTokens(
            await deps.envelope.encrypt(
              JSON.stringify({ accessToken: 'a', refreshToken: `r-${i}` }),
              tokenContext(ctx),
            ),
          )
        : 'v1.local.unused.unused',
      expiresAt,
      ...freshConnectionFields(now),
      // The due ones as a connect stores them (its grant id too), so 3c measures items of a real size.
      ...(isDue ? { grantId: randomUUID() } : {}),
      // The owner index is not what is measured: only the due ones carry it (seeding stays quick).
      ...(isDue ? { gsi1pk: keys.ownerPk(ownerId), gsi1sk: `CONN#${connectionId}` } : {}),
      ...(isDue
        ? { dueAt: seededDueAt(now, Math.floor(i / dueEvery)) }
        : dueSlot(deps.config, { expiresAt, refreshable: true, now, issuedLifetimeSeconds: 3600 })),
      duePk: duePkOf(connectionId, 'close'),
    });
    if (isDue) due.push(connectionId);
  }
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < items.length) {
        const start = next;
        next += 25;
        let requests = items.slice(start, start + 25).map((item) => ({
          PutRequest: { Item: marshall(item, { removeUndefinedValues: true }) },
        }));
        while (requests.length) {
          const out = await dynamo.send(new BatchWriteItemCommand({ RequestItems: { [table]: requests } }));
          requests = (out.UnprocessedItems?.[table] ?? []) as typeof requests;
        }
      }
    }),
  );
  return due;
}

/** The envelope text of an item's tokens: stored packed (Binary), or as text (items written before). */
const tokensText = (item: Item) => (item.tokens?.B ? unpackTokens(item.tokens.B) : item.tokens?.S);

/** A connection item as it would be with a wrapped intermediate key of `bytes` (v2 tokens only), in the form stored. */
function withWrappedKey(item: Item, bytes: number): Item {
  const parts = tokensText(item)?.split('.');
  // v2.<ref>.<slot>.<wrapped key>.<salt>.<iv|tag|ciphertext> (functions/adapters/kms/envelope.ts)
  if (!parts || parts[0] !== 'v2' || parts.length !== 6) return item;
  parts[3] = Buffer.alloc(bytes).toString('base64url');
  const text = parts.join('.');
  return { ...item, tokens: item.tokens?.B ? { B: packTokens(text) } : { S: text } };
}

const wrappedKeyBytes = (item: Item) =>
  Buffer.from(tokensText(item)?.split('.')[3] ?? '', 'base64url').length;

/** Where a metered command's units belong: a refresh's three writes, its reads, or another item's. */
type Phase = 'dispatcher' | 'lease' | 'result' | 'failed' | 'read' | 'other';

/**
 * By sender, item and what the write changed, not by which store method sent it, so a dispatcher
 * that writes nothing per connection, or more, is measured as it is: a worker write of a connection
 * that changes its tokens is the result; one that changes the lease and not the tokens, the lease.
 */
function phaseOf(b: CapacityBucket): Phase {
  const reads = b.command === 'GetItem' || b.command === 'Query';
  // A due-index page that finds nothing is the run's (a partition with nothing due), not a refresh's.
  if (reads) return b.item === 'CONN' || (b.command === 'Query' && b.changed === '') ? 'read' : 'other';
  if (b.item !== 'CONN') return 'other';
  if (b.changed === 'failed') return 'failed';
  if (b.source === 'dispatcher') return 'dispatcher';
  const changed = b.changed.split(',');
  if (changed.includes('tokens')) return 'result';
  if (changed.includes('leaseOwner')) return 'lease';
  return 'other';
}

const isWrite = (b: CapacityBucket) => b.command !== 'GetItem' && b.command !== 'Query';
/** What a bucket cost by the rules, from the item images measured. */
const unitsOf = (b: CapacityBucket) => (isWrite(b) ? b.writes.computed : b.reads.computed);
/** Where DynamoDB Local reports nothing though DynamoDB bills (bench/capacity-probe.ts): not compared. */
const unreported = (b: CapacityBucket) =>
  b.changed === 'failed' || (b.command === 'Query' && b.changed === 'none found');

const scaled = (u: Units, by: number): Units => ({
  table: u.table * by,
  indexes: Object.fromEntries(Object.entries(u.indexes).map(([k, v]) => [k, v * by])),
});

const sameUnits = (a: Units, b: Units) =>
  a.table === b.table &&
  [...new Set([...Object.keys(a.indexes), ...Object.keys(b.indexes)])].every(
    (k) => (a.indexes[k] ?? 0) === (b.indexes[k] ?? 0),
  );

export interface CapacityResult {
  store: string;
  connections: number;
  due: number;
  dispatcherRuns: number;
  refreshed: number;
  /** Units per refresh on connection items (what docs/costs.md estimates), by where they went. */
  perRefresh: {
    writeUnits: number;
    writes: Units;
    byPhase: Record<'dispatcher' | 'lease' | 'result' | 'failed' | 'other', Units>;
    /** Failed conditional writes of connection items per refresh (billed, never reported). */
    failedWrites: number;
    readUnits: number;
    reads: Units;
    /** The same writes by the rules with a KMS-sized wrapped key in every connection item. */
    writeUnitsWithKmsKey: number;
  };
  /** Other items (dispatch cursors, the key ring, ...): units in all and per dispatcher run. */
  otherItems: {
    label: string;
    calls: number;
    writeUnits: number;
    readUnits: number;
    /** Units per dispatcher run, for the dispatcher's. */
    perRun?: number;
  }[];
  /** Every bucket, per refresh. */
  detail: { label: string; changed: string; callsPerRefresh: number; units: Units; kind: 'write' | 'read' }[];
  /** Buckets where DynamoDB Local's report and the rules differ, but for what it never reports: none expected. */
  reportedVsRules: string[];
  /** Commands DynamoDB Local reports nothing for though DynamoDB bills them: their units are by the rules alone. */
  unreported: { failedWrites: number; emptyPages: number; units: number };
  connectionItem: { bytes: number; wrappedKeyBytes: number; bytesWithKmsKey: number; tokensPacked: boolean };
}

/**
 * The refresh pipeline once more, metered: `connections` Close connections (10% due) in DynamoDB
 * Local, the dispatcher run to the end, every message worked off at cap 8 through the local queue.
 */
async function capacityPass(env: Record<string, string>): Promise<CapacityResult> {
  const connections = Number(process.env.BENCH_CAPACITY_CONNECTIONS ?? 1000);
  const store = await startDynamoDbLocal();
  const credentials = { accessKeyId: 'bench', secretAccessKey: 'bench' };
  const plain = new DynamoDBClient({ endpoint: store.endpoint, region: 'us-east-1', credentials });
  const brokerClient = () =>
    new DynamoDBClient({ ...awsClientOptions(store.endpoint), region: 'us-east-1', credentials });
  try {
    await ensureTable(plain, CAPACITY_TABLE);
    const tableEnv = { ...env, TABLE_NAME: CAPACITY_TABLE };
    const table = tableDefinition(CAPACITY_TABLE);
    const variant = (item: Item) => withWrappedKey(item, KMS_WRAPPED_KEY_BYTES);
    const dispatcherDynamo = brokerClient();
    const workerDynamo = brokerClient();
    // One meter per function's client: which function sent a command is which meter saw it.
    const meters: CapacityMeter[] = [
      meterCapacity(dispatcherDynamo, { source: 'dispatcher', table, images: plain, variant }),
      meterCapacity(workerDynamo, { source: 'worker', table, images: plain, variant }),
    ];
    const common = { events: new MemoryEventLog(), logger: createLogger() };
    const due = await seed(
      depsFor('refresh-worker', tableEnv, { ...common, dynamo: plain }),
      plain,
      CAPACITY_TABLE,
      connections,
      10,
    );
    const messages: QueueMessage[] = [];
    const dispatch = refreshScheduled.createHandler(
      depsFor('refresh-scheduled', tableEnv, {
        ...common,
        dynamo: dispatcherDynamo,
        refreshQueue: { send: async (m) => (messages.push(...m), { failed: 0 }) },
      }),
    ) as unknown as (e: unknown, c: Context) => Promise<Record<string, number>>;
    const worker = refreshWorker.createHandler(
      depsFor('refresh-worker', tableEnv, { ...common, dynamo: workerDynamo }),
    ) as unknown as (e: SQSEvent, c: Context) => Promise<WorkerAnswer>;
    let runs = 0;
    let last: Record<string, number>;
    do {
      last = await dispatch(
        {},
        lambdaContext('refresh-scheduled', functionSettings['refresh-scheduled'].timeoutSeconds * 1000),
      );
      runs++;
    } while ((last.deferred ?? 0) > 0 && runs < 20);
    const queue = new LocalRefreshQueue({
      caps: { ...DEFAULT_WORKER_CAPS, close: 8 },
      deliver: (event) =>
        worker(
          event,
          lambdaContext('refresh-worker', functionSettings['refresh-worker'].timeoutSeconds * 1000),
        ),
    });
    const mark = queue.mark();
    await queue.send(messages);
    const ended = await queue.settled(mark);
    queue.close();
    for (const c of [dispatcherDynamo, workerDynamo]) c.destroy();
    return summarizeCapacity(meters, { connections, due: due.length, runs, refreshed: ended.refreshed ?? 0 });
  } finally {
    plain.destroy();
    await store.close();
  }
}

function summarizeCapacity(
  meters: CapacityMeter[],
  counts: { connections: number; due: number; runs: number; refreshed: number },
): CapacityResult {
  const perRefresh = 1 / (counts.refreshed || 1);
  const buckets = meters.flatMap((m) => [...m.buckets.values()]);
  const byPhase: CapacityResult['perRefresh']['byPhase'] = {
    dispatcher: emptyUnits(),
    lease: emptyUnits(),
    result: emptyUnits(),
    failed: emptyUnits(),
    other: emptyUnits(),
  };
  const writes = emptyUnits();
  const withKmsKey = emptyUnits();
  const reads = emptyUnits();
  let failedWrites = 0;
  const otherItems: CapacityResult['otherItems'] = [];
  const reportedVsRules: string[] = [];
  const unreportedTotals = { failedWrites: 0, emptyPages: 0, units: 0 };
  for (const b of buckets) {
    const phase = phaseOf(b);
    const label = `${b.source} ${b.command} ${b.item}`;
    const units = unitsOf(b);
    const reported = isWrite(b) ? b.writes.reported : b.reads.reported;
    if (unreported(b)) {
      if (b.changed === 'failed') unreportedTotals.failedWrites += b.calls;
      else unreportedTotals.emptyPages += b.calls;
      unreportedTotals.units += totalUnits(units);
    } else if (!sameUnits(units, reported)) {
      reportedVsRules.push(
        `${label} [${b.changed}]: reported ${fmtUnits(reported)}, rules ${fmtUnits(units)}`,
      );
    }
    if (phase === 'read') addUnits(reads, units);
    else if (b.item === 'CONN' && isWrite(b)) {
      addUnits(byPhase[phase], units);
      addUnits(writes, units);
      addUnits(withKmsKey, b.writes.variant);
      if (phase === 'failed') failedWrites += b.calls;
    } else {
      const total = totalUnits(units);
      otherItems.push({
        label: `${label}${b.changed && b.changed !== 'created' ? ` [${b.changed}]` : ''}`,
        calls: b.calls,
        writeUnits: isWrite(b) ? total : 0,
        readUnits: isWrite(b) ? 0 : total,
        ...(b.source === 'dispatcher' ? { perRun: total / (counts.runs || 1) } : {}),
      });
    }
  }
  const largest = meters
    .map((m) => m.largest.get('CONN'))
    .reduce((a, b) => (b && (!a || b.bytes > a.bytes) ? b : a), undefined);
  return {
    store: 'DynamoDB Local',
    connections: counts.connections,
    due: counts.due,
    dispatcherRuns: counts.runs,
    refreshed: counts.refreshed,
    perRefresh: {
      writeUnits: totalUnits(writes) * perRefresh,
      writes: scaled(writes, perRefresh),
      byPhase: Object.fromEntries(
        Object.entries(byPhase).map(([k, u]) => [k, scaled(u, perRefresh)]),
      ) as CapacityResult['perRefresh']['byPhase'],
      failedWrites: failedWrites * perRefresh,
      readUnits: totalUnits(reads) * perRefresh,
      reads: scaled(reads, perRefresh),
      writeUnitsWithKmsKey: totalUnits(withKmsKey) * perRefresh,
    },
    otherItems,
    detail: buckets.map((b) => ({
      label: `${b.source} ${b.command} ${b.item}`,
      changed: b.changed,
      callsPerRefresh: b.calls * perRefresh,
      units: scaled(unitsOf(b), perRefresh),
      kind: isWrite(b) ? ('write' as const) : ('read' as const),
    })),
    reportedVsRules,
    unreported: unreportedTotals,
    connectionItem: largest
      ? {
          bytes: largest.bytes,
          wrappedKeyBytes: wrappedKeyBytes(largest.item),
          bytesWithKmsKey: itemSize(withWrappedKey(largest.item, KMS_WRAPPED_KEY_BYTES)),
          tokensPacked: largest.item.tokens?.B !== undefined,
        }
      : { bytes: NaN, wrappedKeyBytes: NaN, bytesWithKmsKey: NaN, tokensPacked: false },
  };
}

const round = (n: number) => Number(n.toFixed(2)).toString();
/** `5 (table 2, byDueTime 2, byOwner 1)`; indexes with no units left out. */
function fmtUnits(u: Units): string {
  const parts = [`table ${round(u.table)}`];
  for (const [k, v] of Object.entries(u.indexes)) if (v) parts.push(`${k} ${round(v)}`);
  return `${round(totalUnits(u))} (${parts.join(', ')})`;
}

export interface PipelineResult {
  connections: number;
  due: number;
  seedSeconds: number;
  dispatch: {
    /** Runs it took (each within the dispatcher's timeout) to hand out everything due. */
    runs: number;
    seconds: number;
    itemsRead: number;
    itemsReadPerDue: number;
    dispatched: number;
    storeCallsPerDue: number;
    cpuMsPerDue: number;
  };
  byCap: { cap: number; refreshes: number; seconds: number; perSecond: number; idealPerSecond: number }[];
  rest: { cap: number; refreshes: number; seconds: number; perSecond: number };
  /** Connections handed out more than once while their messages wait, one more run included (must be 0). */
  redispatched: number;
  /** Messages worked off (a sample, unless BENCH_PIPELINE_ALL=1). */
  workedOff: number;
  refreshed: number;
  crmCalls: number;
  doubleRefreshes: number;
  perRefresh: {
    storeCalls: Record<string, number>;
    storeCallsTotal: number;
    cpuMs: number;
    overheadMs: number;
  };
  /** DynamoDB capacity units per refresh, from a metered pass in DynamoDB Local. */
  capacity: CapacityResult;
}

export async function refreshPipeline(
  printTable: (title: string, rows: Row[]) => void,
): Promise<PipelineResult> {
  const connections = Number(process.env.BENCH_PIPELINE_CONNECTIONS ?? 100_000);
  const caps = (process.env.BENCH_PIPELINE_CAPS ?? '1,2,4,8,16').split(',').map(Number);
  const servers = await startServers();
  try {
    const dynamo = new DynamoDBClient({
      ...awsClientOptions(servers.dynamo),
      region: 'us-east-1',
      credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' },
    });
    await ensureTable(dynamo, TABLE);
    const env = {
      TABLE_NAME: TABLE,
      LOCAL_MASTER_KEY: randomBytes(32).toString('base64'),
      CLOSE_CLIENT_ID: 'bench',
      CLOSE_CLIENT_SECRET: 'bench-secret',
      CLOSE_TOKEN_URL: `${servers.crm}/oauth2/token/`,
      PUBLIC_BASE_URL: 'http://localhost:3999',
    };
    const messages: QueueMessage[] = [];
    const common = { dynamo, events: new MemoryEventLog(), logger: createLogger() };
    const dispatcherDeps = depsFor('refresh-scheduled', env, {
      ...common,
      refreshQueue: { send: async (m) => (messages.push(...m), { failed: 0 }) },
    });
    const workerDeps = depsFor('refresh-worker', env, common);
    const seedDeps = depsFor('refresh-worker', env, common);
    const dispatch = refreshScheduled.createHandler(dispatcherDeps) as unknown as (
      e: unknown,
      c: Context,
    ) => Promise<Record<string, number>>;
    const worker = refreshWorker.createHandler(workerDeps) as unknown as (
      e: SQSEvent,
      c: Context,
    ) => Promise<WorkerAnswer>;
    const calls = counted(dynamo);

    // Seeding is no broker call: its own client, without the broker's 1.5 s request timeout.
    const seeder = new DynamoDBClient({
      endpoint: servers.dynamo,
      region: 'us-east-1',
      credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' },
    });
    let t = performance.now();
    const dueIds = await seed(seedDeps, seeder, TABLE, connections, 10);
    const seedSeconds = (performance.now() - t) / 1000;

    // The dispatcher, run after run as the schedule would (each within its 60 s timeout), until
    // everything due is handed out; a connection handed out twice is counted.
    const handedOut = new Set<string>();
    let handedOutTwice = 0;
    const dispatchRun = async () => {
      const before = messages.length;
      const summary = await dispatch(
        {},
        lambdaContext('refresh-scheduled', functionSettings['refresh-scheduled'].timeoutSeconds * 1000),
      );
      for (const m of messages.slice(before)) {
        const id = m.kind === 'refresh' ? m.connectionId : m.confirmationHash;
        if (handedOut.has(id)) handedOutTwice++;
        handedOut.add(id);
      }
      return summary;
    };
    let calls0 = snapshot(calls);
    let cpu0 = cpuMs();
    t = performance.now();
    const runs: Record<string, number>[] = [];
    do runs.push(await dispatchRun());
    while ((runs.at(-1)?.deferred ?? 0) > 0 && runs.length < 20);
    const run = runs[0] as Record<string, number>;
    const dispatchSeconds = (performance.now() - t) / 1000;
    const dispatchCalls = since(calls, calls0);
    const dispatchCpu = cpuMs() - cpu0;
    const dispatchedTotal = runs.reduce((a, r) => a + (r.dispatched ?? 0), 0);

    // The workers, through the in-process queue, at each cap.
    const work = async (cap: number, batch: QueueMessage[]) => {
      const queue = new LocalRefreshQueue({
        caps: { ...DEFAULT_WORKER_CAPS, close: cap },
        deliver: (event) =>
          worker(
            event,
            lambdaContext('refresh-worker', functionSettings['refresh-worker'].timeoutSeconds * 1000),
          ),
      });
      const mark = queue.mark();
      const started = performance.now();
      await queue.send(batch);
      const ended = await queue.settled(mark);
      const seconds = (performance.now() - started) / 1000;
      queue.close();
      return { refreshes: ended.refreshed ?? 0, seconds, ended };
    };
    calls0 = snapshot(calls);
    cpu0 = cpuMs();
    let offset = 0;
    let refreshed = 0;
    const byCap: PipelineResult['byCap'] = [];
    for (const cap of caps) {
      const batch = messages.slice(offset, offset + 40 * cap);
      if (batch.length === 0) break; // a small BENCH_PIPELINE_CONNECTIONS runs out of messages
      offset += batch.length;
      const r = await work(cap, batch);
      refreshed += r.refreshes;
      byCap.push({
        cap,
        refreshes: r.refreshes,
        seconds: r.seconds,
        perSecond: r.refreshes / r.seconds,
        idealPerSecond: (cap * 1000) / CRM_LATENCY_MS,
      });
    }
    const sampleCalls = since(calls, calls0);
    const sampleCpu = cpuMs() - cpu0;
    const sampled = refreshed;
    const restCap = (caps.at(-1) ?? 16) * 2;
    const rest =
      process.env.BENCH_PIPELINE_ALL === '1'
        ? await work(restCap, messages.slice(offset))
        : { refreshes: 0, seconds: 0 };
    refreshed += rest.refreshes;
    const workedOff = process.env.BENCH_PIPELINE_ALL === '1' ? messages.length : offset;
    // Claimed while their messages wait: one more run hands nothing out again.
    await dispatchRun();

    // Every connection refreshed exactly once: one CRM call each, no refresh token presented twice, version 1 -> 2.
    const count = (await (await fetch(`${servers.crm}/count`)).json()) as { calls: number; repeats: number };
    let wrongVersion = 0;
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < workedOff) {
          const message = messages[next++] as QueueMessage;
          const id = message.kind === 'refresh' ? message.connectionId : '';
          const out = await dynamo.send(
            new GetItemCommand({ TableName: TABLE, Key: marshall(keys.connection(id)) }),
          );
          if ((out.Item ? unmarshall(out.Item).version : 0) !== 2) wrongVersion++;
        }
      }),
    );
    const doubleRefreshes = count.repeats + Math.max(0, count.calls - workedOff) + wrongVersion;
    // After the CRM's count above: this pass refreshes connections of its own.
    const capacity = await capacityPass(env);
    const one = byCap.find((b) => b.cap === 1);
    const result: PipelineResult = {
      connections,
      due: dueIds.length,
      seedSeconds,
      dispatch: {
        seconds: dispatchSeconds,
        itemsRead: run.itemsRead ?? 0,
        itemsReadPerDue: (run.itemsRead ?? 0) / (run.due || 1),
        dispatched: dispatchedTotal,
        runs: runs.length,
        storeCallsPerDue: sum(dispatchCalls) / (dispatchedTotal || 1),
        cpuMsPerDue: dispatchCpu / (dispatchedTotal || 1),
      },
      byCap,
      redispatched: handedOutTwice,
      workedOff,
      rest: {
        cap: restCap,
        refreshes: rest.refreshes,
        seconds: rest.seconds,
        perSecond: rest.seconds > 0 ? rest.refreshes / rest.seconds : 0,
      },
      refreshed,
      crmCalls: count.calls,
      doubleRefreshes,
      perRefresh: {
        storeCalls: Object.fromEntries(Object.entries(sampleCalls).map(([k, v]) => [k, v / (sampled || 1)])),
        storeCallsTotal: sum(sampleCalls) / (sampled || 1),
        cpuMs: sampleCpu / (sampled || 1),
        overheadMs: one ? 1000 / one.perSecond - CRM_LATENCY_MS : NaN,
      },
      capacity,
    };
    print(result, printTable);
    return result;
  } finally {
    servers.child.kill('SIGTERM');
  }
}

function print(r: PipelineResult, printTable: (title: string, rows: Row[]) => void) {
  const base = r.byCap[0];
  const rows: Row[] = [
    {
      figure: `${r.connections.toLocaleString('en')} connections, ${r.due.toLocaleString('en')} due: dispatch`,
      measured: `first run: ${r.dispatch.itemsRead} index items read = ${r.dispatch.itemsReadPerDue.toFixed(2)} per due; ${r.dispatch.dispatched} queued in ${r.dispatch.runs} run(s), ${r.dispatch.seconds.toFixed(1)} s`,
      target: 'about 1 item read per due; all due queued',
      verdict: verdict(r.dispatch.itemsReadPerDue <= 1.05 && r.dispatch.dispatched === r.due),
    },
    ...r.byCap.map((b) => ({
      figure: `worker cap ${b.cap}: ${b.refreshes} refreshes`,
      measured: `${b.perSecond.toFixed(1)}/s (${base ? (b.perSecond / base.perSecond).toFixed(1) : '-'}x cap 1) in ${b.seconds.toFixed(1)} s`,
      target: `grows with the cap until the CPU saturates; at most ${b.idealPerSecond}/s (cap / 100 ms)`,
      verdict: '' as const,
    })),
    ...(r.rest.refreshes > 0
      ? [
          {
            figure: `the rest at cap ${r.rest.cap}: ${r.rest.refreshes} refreshes`,
            measured: `${r.rest.perSecond.toFixed(1)}/s in ${r.rest.seconds.toFixed(1)} s`,
            target: `at most ${(r.rest.cap * 1000) / CRM_LATENCY_MS}/s`,
            verdict: '' as const,
          },
        ]
      : []),
    {
      figure: 'connections handed out twice (all runs, and one more while the messages wait)',
      measured: String(r.redispatched),
      target: '0',
      verdict: verdict(r.redispatched === 0),
    },
    {
      figure: 'messages worked off / refreshed / CRM token calls',
      measured: `${r.workedOff} / ${r.refreshed} / ${r.crmCalls}`,
      target: 'all equal',
      verdict: verdict(r.refreshed === r.workedOff && r.crmCalls === r.workedOff),
    },
    {
      figure: 'double refreshes (a refresh token presented twice, a second call, a version past 2)',
      measured: String(r.doubleRefreshes),
      target: '0',
      verdict: verdict(r.doubleRefreshes === 0),
    },
  ];
  printTable('3b. Refresh pipeline, real code: dispatcher -> queue -> workers, CRM at 100 ms', rows);
  printTable('3c. Per-refresh costs (calibrate bench/model from bench/results/refresh-calibration.json)', [
    {
      figure: 'store calls per refresh (worker)',
      measured: `${r.perRefresh.storeCallsTotal.toFixed(2)}: ${Object.entries(r.perRefresh.storeCalls)
        .map(([k, v]) => `${k} ${v.toFixed(2)}`)
        .join(', ')}`,
      target: 'GetItem 1, UpdateItem 2 (lease, result)',
      verdict: '',
    },
    {
      figure: 'broker CPU per refresh (worker; store and CRM in another process)',
      measured: `${r.perRefresh.cpuMs.toFixed(2)} ms`,
      target: 'well under the CRM latency',
      verdict: verdict(r.perRefresh.cpuMs < CRM_LATENCY_MS / 4),
    },
    {
      figure: 'broker time per refresh beyond the CRM call (cap 1)',
      measured: `${r.perRefresh.overheadMs.toFixed(1)} ms`,
      target: 'small against the CRM latency',
      verdict: '',
    },
    {
      figure: 'dispatcher per due connection',
      measured: `${r.dispatch.storeCallsPerDue.toFixed(2)} store calls, ${r.dispatch.cpuMsPerDue.toFixed(3)} ms CPU`,
      target: 'about 1/100 of a Query page and 1/10 of a send (cursor writes are per partition and run)',
      verdict: '',
    },
    ...capacityRows(r.capacity),
  ]);
  const c = r.capacity;
  printTable(
    `3c. DynamoDB units per refresh by command (${c.store}, ${c.refreshed} refreshes, ${c.dispatcherRuns} dispatcher run(s); [attributes the write changed])`,
    c.detail.map((d) => ({
      figure: `${d.label}${d.changed ? ` [${d.changed}]` : ''}`,
      measured: `${round(d.callsPerRefresh)} calls, ${fmtUnits(d.units)} ${d.kind} units`,
      target: '',
      verdict: '',
    })),
  );
}

/**
 * How far an item is from the next write unit, in bytes and in token characters: each character of
 * plaintext is a byte of ciphertext, stored as it is when packed (Binary), as 4/3 of a byte as base64url text.
 */
function headroom(bytes: number, packed: boolean): string {
  const left = Math.ceil(bytes / 1024) * 1024 - bytes;
  const characters = packed ? left : Math.floor((left * 3) / 4);
  return ` (${left} bytes, ~${characters} token characters, from the next)`;
}

/** 3c's DynamoDB rows: units per refresh against docs/costs.md (COSTS_MD_PER_REFRESH), and the item size. */
function capacityRows(c: CapacityResult): Row[] {
  const p = c.perRefresh;
  const docs = COSTS_MD_PER_REFRESH;
  const phase = (name: keyof typeof p.byPhase, target: string): Row => ({
    figure: `  of which ${name}`,
    measured: fmtUnits(p.byPhase[name]),
    target,
    verdict: '',
  });
  const item = c.connectionItem;
  const tableWriteUnits = (bytes: number) => Math.ceil(bytes / 1024);
  return [
    {
      figure: `DynamoDB write units per refresh, connection items (${c.refreshed} refreshes in ${c.store}, dispatcher -> queue -> worker; DynamoDB's rules on the items measured)`,
      measured: fmtUnits(p.writes),
      target: `<= ${docs.writeUnits} (docs/costs.md)`,
      verdict: verdict(c.refreshed > 0 && p.writeUnits <= docs.writeUnits),
    },
    phase(
      'dispatcher',
      `${docs.dispatcherWriteUnits} (docs/costs.md: no write per connection, cursors per run)`,
    ),
    phase('lease', `${docs.leaseWriteUnits} (docs/costs.md)`),
    phase('result', `${docs.resultWriteUnits} (docs/costs.md: 1 + byOwner 1 + byDueTime 2)`),
    ...(totalUnits(p.byPhase.failed) + totalUnits(p.byPhase.other) > 0
      ? [
          phase('failed', `0 (${round(p.failedWrites)} failed conditional writes per refresh, by the rules)`),
          phase('other', '0'),
        ]
      : []),
    {
      figure: `  the same with a ${KMS_WRAPPED_KEY_BYTES}-byte KMS wrapped key in every item (by the rules)`,
      measured: round(p.writeUnitsWithKmsKey),
      target: `<= ${docs.writeUnits} (docs/costs.md)`,
      verdict: verdict(c.refreshed > 0 && p.writeUnitsWithKmsKey <= docs.writeUnits),
    },
    {
      figure: "DynamoDB read units per refresh (the worker's read, the dispatcher's index reads)",
      measured: fmtUnits(p.reads),
      target: `about ${docs.readUnits} (docs/costs.md)`,
      verdict: verdict(c.refreshed > 0 && p.readUnits <= docs.readUnits * 1.1),
    },
    ...c.otherItems.map((o) => ({
      figure: `  other items: ${o.label}`,
      measured: `${o.calls} calls, ${round(o.writeUnits)} write + ${round(o.readUnits)} read units in all${o.perRun === undefined ? '' : ` = ${round(o.perRun)} per dispatcher run`}`,
      target: 'per run or per container, not per refresh',
      verdict: '' as const,
    })),
    {
      figure: 'largest connection item (DynamoDB item size)',
      measured: `${item.bytes} bytes (${item.wrappedKeyBytes}-byte local wrapped key, tokens ${item.tokensPacked ? 'packed' : 'as text'}) = ${tableWriteUnits(item.bytes)} write unit(s); ${item.bytesWithKmsKey} bytes with a ${KMS_WRAPPED_KEY_BYTES}-byte KMS one = ${tableWriteUnits(item.bytesWithKmsKey)}${headroom(item.bytesWithKmsKey, item.tokensPacked)}`,
      target: `under ${docs.itemBytes.toLocaleString('en')} bytes with the KMS key (1 write unit a table write, as docs/costs.md counts)`,
      verdict: verdict(item.bytesWithKmsKey < docs.itemBytes),
    },
    {
      figure: `${c.store}'s reported units vs DynamoDB's rules (the figures above)`,
      measured: `${c.reportedVsRules.length ? c.reportedVsRules.join('; ') : 'equal'}; not reported: ${c.unreported.failedWrites} failed conditional writes, ${c.unreported.emptyPages} Query pages that found nothing (${round(c.unreported.units)} units by the rules)`,
      target: 'equal where it reports',
      verdict: verdict(c.reportedVsRules.length === 0),
    },
  ];
}

/** The per-refresh costs, for bench/model (bench/model/defaults.ts reads `perRefreshOverheadMs`). */
export function writeCalibration(dir: string, r: PipelineResult): void {
  writeFileSync(
    join(dir, 'refresh-calibration.json'),
    JSON.stringify(
      {
        at: new Date().toISOString(),
        source: 'npm run bench, section 3b (bench/refresh-pipeline.ts)',
        crmLatencyMs: CRM_LATENCY_MS,
        perRefreshOverheadMs: r.perRefresh.overheadMs,
        perRefreshCpuMs: r.perRefresh.cpuMs,
        perRefreshStoreCalls: r.perRefresh.storeCalls,
        perRefreshStoreCallsTotal: r.perRefresh.storeCallsTotal,
        perRefreshDynamoUnits: {
          write: r.capacity.perRefresh.writeUnits,
          writeWithKmsKey: r.capacity.perRefresh.writeUnitsWithKmsKey,
          read: r.capacity.perRefresh.readUnits,
        },
        dispatcherPerDue: {
          storeCalls: r.dispatch.storeCallsPerDue,
          cpuMs: r.dispatch.cpuMsPerDue,
          itemsRead: r.dispatch.itemsReadPerDue,
        },
        refreshesPerSecondByCap: Object.fromEntries(r.byCap.map((b) => [b.cap, b.perSecond])),
      },
      null,
      2,
    ),
  );
}

// Alone: `npx tsx bench/refresh-pipeline.ts` (BENCH_PIPELINE_CONNECTIONS etc. as above), 3b and 3c only.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
  process.env.POWERTOOLS_METRICS_DISABLED = 'true';
  process.env.POWERTOOLS_LOG_LEVEL = 'ERROR';
  await refreshPipeline((title, rows) => {
    console.log(`\n## ${title}`);
    console.table(rows);
  });
}
