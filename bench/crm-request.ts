/**
 * `crm-request` against the Close sandbox answering at 100 ms (a forwarding
 * proxy in front of the sandbox API adds the latency), in one process with the
 * local broker and the embedded store:
 *
 * - calls per second through `crm-request` with many concurrent callers;
 * - the proxy's overhead over a direct call (`token-fetch`, then the CRM with
 *   the token), in DynamoDB commands per call. Target: at most 1 more per call
 *   while the rate budget is healthy (the budget's one conditional write).
 *
 * The sandbox's rate limit, and so the broker's budget (`sandbox.env()` gives
 * the broker the matching `<P>_RATE_LIMIT`), is far above this load.
 */
import { startLocalServer } from '../local/server.ts';
import { startFaultProxy } from '../test/support/fault-proxy.ts';
import { connectSandbox, countingStore } from './local-broker.ts';

type Row = { figure: string; measured: string; target: string; verdict: 'PASS' | 'MISS' | '' };
const OWNER = 'bench-crm-request';
const LATENCY_MS = 100;
const CALLERS = Number(process.env.BENCH_CRM_CALLERS ?? 50);
const CALLS = Number(process.env.BENCH_CRM_CALLS ?? 1000);

/** Runs `calls` jobs with `callers` at a time; calls per second and latency percentiles. */
async function load(callers: number, calls: number, job: () => Promise<void>) {
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: callers }, async () => {
      while (next < calls) {
        next++;
        const t = performance.now();
        await job();
        latencies.push(performance.now() - t);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const at = (p: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  return { perSecond: calls / seconds, p50Ms: at(0.5), p99Ms: at(0.99) };
}

export async function crmRequestBench(printTable: (title: string, rows: Row[]) => void) {
  const { store, dynamo, commands } = await countingStore();
  const proxy = await startFaultProxy();
  const apiPath = '/sandbox/close-api/api/v1';
  const server = await startLocalServer({
    port: 0,
    dataDir: null,
    schedule: false,
    env: { AWS_ENDPOINT_URL_DYNAMODB: store.endpoint, CLOSE_API_BASE_URL: `${proxy.url}${apiPath}` },
    overrides: { dynamo },
  });
  proxy.target = server.url;
  try {
    const connectionId = await connectSandbox(server, OWNER, 'close');
    proxy.delayAnswers(LATENCY_MS);
    const direct = async () => {
      const token = (await server.invoke('token-fetch', { connectionId, ownerId: OWNER })) as {
        apiBaseUrl: string;
        headers: Record<string, string>;
      };
      const response = await fetch(`${token.apiBaseUrl}/me/`, { headers: token.headers });
      await response.arrayBuffer();
      if (response.status !== 200) throw new Error(`bench: direct call answered ${response.status}`);
    };
    // Statuses seen through crm-request: 200, or 429 when the shared budget held a call back.
    const statuses: Record<number, number> = {};
    const proxied = async () => {
      const answer = (await server.invoke('crm-request', { connectionId, ownerId: OWNER, path: '/me/' })) as {
        status: number;
      };
      statuses[answer.status] = (statuses[answer.status] ?? 0) + 1;
      if (answer.status !== 200 && answer.status !== 429) {
        throw new Error(`bench: crm-request answered ${answer.status}`);
      }
    };
    // Warm both paths (data keys, the budget item, connections to the proxy).
    for (let i = 0; i < 20; i++) await Promise.all([direct(), proxied()]);

    const count = async (job: () => Promise<void>, n: number) => {
      for (const k of Object.keys(commands)) delete commands[k];
      for (let i = 0; i < n; i++) await job();
      const total = Object.values(commands).reduce((a, b) => a + b, 0);
      return {
        perCall: total / n,
        byCommand: Object.fromEntries(Object.entries(commands).map(([k, v]) => [k, v / n])),
      };
    };
    const directStore = await count(direct, 100);
    const proxiedStore = await count(proxied, 100);
    const extra = proxiedStore.perCall - directStore.perCall;
    const extraByCommand = Object.fromEntries(
      [...new Set([...Object.keys(proxiedStore.byCommand), ...Object.keys(directStore.byCommand)])].map(
        (k) => [k, (proxiedStore.byCommand[k] ?? 0) - (directStore.byCommand[k] ?? 0)],
      ),
    );

    const directLoad = await load(CALLERS, CALLS, direct);
    const before = proxy.requests;
    for (const k of Object.keys(statuses)) delete statuses[Number(k)];
    const proxiedLoad = await load(CALLERS, CALLS, proxied);
    const crmCalls = proxy.requests - before;
    const answered = statuses[200] ?? 0;
    const heldBack = statuses[429] ?? 0;
    const fmt = (o: Record<string, number>) =>
      Object.entries(o)
        .map(([k, v]) => `${v.toFixed(2)} ${k}`)
        .join(' + ');

    printTable(
      `crm-request: Close sandbox at ${LATENCY_MS} ms, ${CALLERS} concurrent callers, ${CALLS} calls`,
      [
        {
          figure: 'calls per second through crm-request',
          measured: `${proxiedLoad.perSecond.toFixed(0)} (p50 ${proxiedLoad.p50Ms.toFixed(0)} ms, p99 ${proxiedLoad.p99Ms.toFixed(0)} ms)`,
          target: '',
          verdict: '',
        },
        {
          figure: 'calls per second, direct (token-fetch + the CRM)',
          measured: `${directLoad.perSecond.toFixed(0)} (p50 ${directLoad.p50Ms.toFixed(0)} ms, p99 ${directLoad.p99Ms.toFixed(0)} ms)`,
          target: '',
          verdict: '',
        },
        {
          figure: 'answers: the CRM 200 / held back by the budget (429, no CRM call)',
          measured: `${answered} / ${heldBack}`,
          target: `${CALLS} / 0 (budget far above the load)`,
          verdict: answered === CALLS ? 'PASS' : 'MISS',
        },
        {
          figure: 'CRM requests per answered call',
          measured: (crmCalls / Math.max(1, answered)).toFixed(2),
          target: '1',
          verdict: crmCalls === answered ? 'PASS' : 'MISS',
        },
        {
          figure: 'store commands per call: direct',
          measured: `${directStore.perCall.toFixed(2)} (${fmt(directStore.byCommand)})`,
          target: '',
          verdict: '',
        },
        {
          figure: 'store commands per call: crm-request',
          measured: `${proxiedStore.perCall.toFixed(2)} (${fmt(proxiedStore.byCommand)})`,
          target: '',
          verdict: '',
        },
        {
          figure: 'extra store commands per call (budget healthy)',
          measured: `${extra.toFixed(2)} (${fmt(extraByCommand)})`,
          target: '<= 1',
          verdict: extra <= 1 ? 'PASS' : 'MISS',
        },
      ],
    );
    return {
      latencyMs: LATENCY_MS,
      callers: CALLERS,
      calls: CALLS,
      crmRequestPerSecond: proxiedLoad.perSecond,
      crmRequestP50Ms: proxiedLoad.p50Ms,
      crmRequestP99Ms: proxiedLoad.p99Ms,
      directPerSecond: directLoad.perSecond,
      storeCommandsPerCall: { direct: directStore, crmRequest: proxiedStore, extra },
      crmRequestsPerCall: crmCalls / Math.max(1, answered),
      answered,
      heldBackByBudget: heldBack,
    };
  } finally {
    await server.close();
    await proxy.close();
    dynamo.destroy();
    await store.close();
  }
}
