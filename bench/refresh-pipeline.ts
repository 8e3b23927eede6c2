/**
 * `npm run bench`, section 3b: the refresh pipeline with the real code at
 * 100,000 connections, 10% of them due: the `refresh-scheduled` handler
 * (dispatcher) claims them and hands them to the in-process queue
 * (local/refresh-queue.ts), which drives the `refresh-worker` handler with a
 * worker cap, against the embedded store and a CRM stub of 100 ms, both in a
 * child process (bench/pipeline-servers.ts) so this process's CPU time is the
 * broker's. Measures index items read per due connection, refreshes per
 * second against the worker cap, double refreshes, and the per-refresh costs a
 * simulation is calibrated from (bench/results/refresh-calibration.json).
 *
 * Sampling: one dispatch claims and queues all 10,000; a second finds none
 * (each is claimed while its message waits). Then each cap in
 * BENCH_PIPELINE_CAPS (default 1,2,4,8,16) works off 40 x cap of the messages
 * (40 batches for one worker, 2.5 for sixteen: every worker stays busy), and
 * double refreshes are counted over every message worked off. The embedded
 * store does a few hundred operations a second on this machine, so working
 * off all 10,000 takes minutes: BENCH_PIPELINE_ALL=1 does, at twice the last cap.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { BatchWriteItemCommand, DynamoDBClient, GetItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type { Context, SQSEvent } from 'aws-lambda';
import { awsClientOptions } from '../functions/adapters/aws-clients.ts';
import { duePkOf, keys } from '../functions/adapters/dynamodb/keys.ts';
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

type Row = { figure: string; measured: string; target: string; verdict: 'PASS' | 'MISS' | '' };
const verdict = (ok: boolean): 'PASS' | 'MISS' => (ok ? 'PASS' : 'MISS');
const CRM_LATENCY_MS = 100;
const TABLE = 'bench-pipeline';

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
async function seed(deps: BrokerDeps, dynamo: DynamoDBClient, count: number, dueEvery: number) {
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
      account: { id: `orga_${i}`, name: 'Acme', userEmail: null },
      status: 'active',
      // Never read unless due: the others are what a table of idle connections looks like to the index.
      tokens: isDue
        ? await deps.envelope.encrypt(
            JSON.stringify({ accessToken: 'a', refreshToken: `r-${i}` }),
            tokenContext(ctx),
          )
        : 'v1.local.unused.unused',
      expiresAt,
      issuedLifetimeSeconds: 3600,
      lastRefreshedAt: null,
      lastError: null,
      version: 1,
      refreshFailures: 0,
      createdAt: now,
      updatedAt: now,
      // The owner index is not what is measured: only the due ones carry it (seeding stays quick).
      ...(isDue ? { gsi1pk: keys.ownerPk(ownerId), gsi1sk: `CONN#${connectionId}` } : {}),
      ...dueSlot(deps.config, { expiresAt, refreshable: true, now, issuedLifetimeSeconds: 3600 }),
      duePk: duePkOf(connectionId),
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
          const out = await dynamo.send(new BatchWriteItemCommand({ RequestItems: { [TABLE]: requests } }));
          requests = (out.UnprocessedItems?.[TABLE] ?? []) as typeof requests;
        }
      }
    }),
  );
  return due;
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
    const dueIds = await seed(seedDeps, seeder, connections, 10);
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
      measured: `first run: ${r.dispatch.itemsRead} index items read = ${r.dispatch.itemsReadPerDue.toFixed(2)} per due; ${r.dispatch.dispatched} claimed and queued in ${r.dispatch.runs} run(s), ${r.dispatch.seconds.toFixed(1)} s`,
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
      target: 'one claim (UpdateItem) + about 1/100 of a Query page',
      verdict: '',
    },
  ]);
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
