/**
 * The shared rate budget (issue 14): 50 concurrent `crm-request` callers of one
 * CRM account whose sandbox CRM allows 10 requests per second, through the
 * local broker and the embedded store, counted at the sandbox CRM:
 *
 * - Copper (no rate-limit headers; the budget is the configured 10 per second):
 *   the most requests the CRM saw in any 1-second window (target: never above
 *   10) and its 429s (target 0);
 * - Close, with the broker configured for 40 per second and the CRM allowing
 *   10: the limit is learned from the CRM's `RateLimit` header; once known (a
 *   window after the CRM's first answer, when the requests admitted before it
 *   have arrived) the CRM sees at most 10 per second and answers no 429.
 *
 * Also the store commands per call: the take (one conditional write) plus,
 * for a caller that had to wait, one read just before its slot.
 */
import { startLocalServer } from '../local/server.ts';
import type { SandboxArrival } from '../local/sandbox/rate-limit.ts';
import { connectSandbox, countingStore } from './local-broker.ts';

type Row = { figure: string; measured: string; target: string; verdict: 'PASS' | 'MISS' | '' };
const OWNER = 'bench-rate-budget';
const CALLERS = 50;
const CALLS_EACH = Number(process.env.BENCH_RATE_CALLS_EACH ?? 2);
const LIMIT = 10;

/** The most arrivals in any half-open window of `windowMs`. */
function busiestWindow(times: number[], windowMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let most = 0;
  for (let i = 0, j = 0; i < sorted.length; i++) {
    while ((sorted[j] as number) <= (sorted[i] as number) - windowMs) j++;
    most = Math.max(most, i - j + 1);
  }
  return most;
}

export async function rateBudgetBench(printTable: (title: string, rows: Row[]) => void) {
  const { store, dynamo, commands } = await countingStore();
  const server = await startLocalServer({
    port: 0,
    dataDir: null,
    schedule: false,
    env: {
      AWS_ENDPOINT_URL_DYNAMODB: store.endpoint,
      // Every sandbox CRM allows 10 per second; sandbox.env() tells the broker so...
      SANDBOX_RATE_LIMIT: `${LIMIT}/1`,
      // ...except for Close, where the broker starts out believing 40 and must learn 10 from the headers.
      CLOSE_RATE_LIMIT: '40/1',
    },
    overrides: { dynamo },
  });
  const limiter = server.sandbox.rateLimits;
  try {
    const ids = {
      copper: await connectSandbox(server, OWNER, 'copper'),
      close: await connectSandbox(server, OWNER, 'close'),
    };
    const paths = { copper: '/account', close: '/me/' };

    const run = async (provider: 'copper' | 'close') => {
      // Let the connect flow's identity calls leave the CRM's window.
      await new Promise((r) => setTimeout(r, 1_100));
      for (const k of Object.keys(commands)) delete commands[k];
      const since = Date.now();
      const statuses: Record<string, number> = {};
      const retryAfter: number[] = [];
      const started = performance.now();
      await Promise.all(
        Array.from({ length: CALLERS }, async () => {
          for (let i = 0; i < CALLS_EACH; i++) {
            const answer = (await server.invoke('crm-request', {
              connectionId: ids[provider],
              ownerId: OWNER,
              path: paths[provider],
            })) as { status: number; retryAfterSeconds: number | null };
            statuses[answer.status] = (statuses[answer.status] ?? 0) + 1;
            if (answer.retryAfterSeconds !== null) retryAfter.push(answer.retryAfterSeconds);
          }
        }),
      );
      const seconds = (performance.now() - started) / 1000;
      const seen = limiter.arrivals().filter((x: SandboxArrival) => x.provider === provider && x.at >= since);
      const first = seen[0]?.at ?? since;
      // Once the budget is known: a window after the CRM's first answer, by when every request the
      // broker admitted before it heard of the limit has arrived.
      const afterFirst = seen.filter((x) => x.at >= first + 1000);
      const storeCommands = Object.values(commands).reduce((a, b) => a + b, 0);
      return {
        calls: CALLERS * CALLS_EACH,
        seconds,
        statuses,
        retryAfterSeconds: retryAfter,
        crmRequests: seen.length,
        crmPerSecond: seen.length / seconds,
        busiestSecond: busiestWindow(
          seen.map((x) => x.at),
          1000,
        ),
        busiestSecondAfterFirstAnswer: busiestWindow(
          afterFirst.map((x) => x.at),
          1000,
        ),
        crm429: seen.filter((x) => x.status === 429).length,
        crm429AfterFirstAnswer: afterFirst.filter((x) => x.status === 429).length,
        storeCommandsPerCall: storeCommands / (CALLERS * CALLS_EACH),
        storeCommandsByName: { ...commands },
      };
    };

    const copper = await run('copper');
    const close = await run('close');
    const fmt = (o: Record<string, number>) =>
      Object.entries(o)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ');
    printTable(
      `Shared rate budget: ${CALLERS} callers x ${CALLS_EACH} calls, one CRM account allowing ${LIMIT} per second`,
      [
        {
          figure: 'Copper (budget configured): most requests reaching the CRM in any 1 s',
          measured: `${copper.busiestSecond} (mean ${copper.crmPerSecond.toFixed(1)}/s over ${copper.seconds.toFixed(1)} s)`,
          target: `<= ${LIMIT}`,
          verdict: copper.busiestSecond <= LIMIT ? 'PASS' : 'MISS',
        },
        {
          figure: 'Copper: requests the CRM answered 429',
          measured: `${copper.crm429} of ${copper.crmRequests}`,
          target: '0',
          verdict: copper.crm429 === 0 ? 'PASS' : 'MISS',
        },
        {
          figure: 'Copper: crm-request answers by status',
          measured: fmt(copper.statuses),
          target: '',
          verdict: '',
        },
        {
          figure: 'Copper: store commands per call',
          measured: `${copper.storeCommandsPerCall.toFixed(2)} (${fmt(copper.storeCommandsByName)})`,
          target: '',
          verdict: '',
        },
        {
          figure: 'Close (broker told 40/s, learns 10/s): most in any 1 s once learned',
          measured: `${close.busiestSecondAfterFirstAnswer} (whole run ${close.busiestSecond}; mean ${close.crmPerSecond.toFixed(1)}/s over ${close.seconds.toFixed(1)} s)`,
          target: `<= ${LIMIT}`,
          verdict: close.busiestSecondAfterFirstAnswer <= LIMIT ? 'PASS' : 'MISS',
        },
        {
          figure: 'Close: CRM 429s once the budget is known (a second after its first answer)',
          measured: `${close.crm429AfterFirstAnswer} (before: ${close.crm429 - close.crm429AfterFirstAnswer})`,
          target: '0',
          verdict: close.crm429AfterFirstAnswer === 0 ? 'PASS' : 'MISS',
        },
        {
          figure: 'Close: crm-request answers by status',
          measured: fmt(close.statuses),
          target: '',
          verdict: '',
        },
      ],
    );
    return { callers: CALLERS, callsEach: CALLS_EACH, limitPerSecond: LIMIT, copper, close };
  } finally {
    await server.close();
    dynamo.destroy();
    await store.close();
  }
}
