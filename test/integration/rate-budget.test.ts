/**
 * The shared rate budget per CRM account (issue 14; interface.md "Calling the
 * CRM through the broker"):
 *
 * - in the table (the embedded DynamoDB-compatible store, the real adapter): a
 *   healthy budget costs one conditional UpdateItem per call and no read; 50
 *   callers in two "containers" (two adapters, each with its own memory) at 10
 *   per second never start more than 10 in any second; one item per account,
 *   with a `ttl`; a 429 seen in one container holds the callers of the other;
 * - end to end, `crm-request` through the local broker against the sandbox
 *   CRMs limited to 10 per second: 50 concurrent callers, and the sandbox never
 *   sees more than 10 in any 1-second window nor answers 429; a lower limit the
 *   CRM reports (Close's `RateLimit`) is learned, and once learned the CRM sees
 *   no more than it allows and answers no 429; a window the CRM says is spent
 *   for longer than a caller can wait is answered `status: 429` with
 *   `retryAfterSeconds` and no CRM call.
 */
import { DynamoDBClient, ScanCommand } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoRateBudgets } from '../../functions/adapters/dynamodb/rate-budget.ts';
import { resolveProviders } from '../../functions/core/domain/providers.ts';
import type { ConnectionRecord } from '../../functions/core/domain/records.ts';
import type { Deps } from '../../functions/core/ports.ts';
import { admitRequest, recordCrmAnswer } from '../../functions/core/use-cases/rate-budget.ts';
import { type EmbeddedDynamo, startEmbeddedDynamo } from '../../local/embedded-store.ts';
import { ensureTable } from '../../local/ensure-table.ts';
import type { SandboxArrival } from '../../local/sandbox/rate-limit.ts';
import { connect } from '../support/flows.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';

const TABLE = 'rate-budget-test';
const CALLERS = 50;

/** The most timestamps in any half-open window of `windowMs`. */
function busiestWindow(times: readonly number[], windowMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let most = 0;
  for (let i = 0, j = 0; i < sorted.length; i++) {
    while ((sorted[j] as number) <= (sorted[i] as number) - windowMs) j++;
    most = Math.max(most, i - j + 1);
  }
  return most;
}

/** A table client that counts the commands it sends. */
function countingClient(endpoint: string) {
  const client = new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });
  const counts: Record<string, number> = {};
  client.middlewareStack.add(
    (next, context) => async (args) => {
      counts[context.commandName as string] = (counts[context.commandName as string] ?? 0) + 1;
      return next(args);
    },
    { step: 'initialize' },
  );
  return { client, counts };
}

const connection = {
  connectionId: 'conn_rate',
  ownerId: 'owner-rate',
  provider: 'copper',
  account: { id: 'acct-rate', name: null, userEmail: null },
} as ConnectionRecord;

describe('the shared budget in the table', () => {
  let dynamo: EmbeddedDynamo;

  beforeAll(async () => {
    dynamo = await startEmbeddedDynamo();
    const setup = countingClient(dynamo.endpoint);
    await ensureTable(setup.client, TABLE);
    setup.client.destroy();
  });
  afterAll(async () => dynamo?.close());

  /** One container: its own adapter (and memory of the budget) over the shared table. */
  function container(clock: { now: () => number; sleep: (ms: number) => Promise<void> }) {
    const { client, counts } = countingClient(dynamo.endpoint);
    const deps = {
      config: { providers: resolveProviders({ COPPER_RATE_LIMIT: '10/1' }) },
      rateBudgets: new DynamoRateBudgets(client, TABLE),
      logger: { info: () => undefined, warn: () => undefined, error: () => undefined },
      ...clock,
    } as unknown as Deps;
    return { deps, counts, client };
  }

  const realClock = {
    now: () => Date.now(),
    sleep: (ms: number) => new Promise<void>((r) => setTimeout(r, ms)),
  };

  it('a healthy budget costs one conditional UpdateItem per call, and nothing after the answer', async () => {
    let clock = Date.now();
    const c = container({ now: () => clock, sleep: async (ms) => void (clock += ms) });
    const account = { ...connection, account: { ...connection.account, id: 'acct-healthy' } };
    for (let i = 0; i < 20; i++) {
      expect(await admitRequest(c.deps, account, clock + 5_000)).toEqual({ admitted: true });
      await recordCrmAnswer(c.deps, account, {
        status: 200,
        headers: { 'content-type': 'application/json' },
      });
      clock += 200;
    }
    expect(c.counts).toEqual({ UpdateItemCommand: 20 });
    c.client.destroy();
  });

  it(`${CALLERS} callers in two containers at 10 per second: never more than 10 start in any second`, async () => {
    const a = container(realClock);
    const b = container(realClock);
    const starts: number[] = [];
    const answers = await Promise.all(
      Array.from({ length: CALLERS }, async (_, i) => {
        const answer = await admitRequest((i % 2 ? a : b).deps, connection, Date.now() + 30_000);
        starts.push(Date.now());
        return answer;
      }),
    );
    expect(answers.every((x) => x.admitted)).toBe(true);
    expect(busiestWindow(starts, 1000)).toBeLessThanOrEqual(10);
    // Each caller writes at most three times: its take, one more after losing the race for an idle
    // budget, one more after giving up a slot the table confirmed too late. (Reads are the waiters'
    // look before their slot, plus, on this emulator, one per failed condition: it does not return
    // the item with the failure as DynamoDB does.)
    const writes = (a.counts.UpdateItemCommand ?? 0) + (b.counts.UpdateItemCommand ?? 0);
    expect(writes).toBeLessThanOrEqual(CALLERS * 3);
    const scan = countingClient(dynamo.endpoint);
    const items = ((await scan.client.send(new ScanCommand({ TableName: TABLE }))).Items ?? []).map((i) =>
      unmarshall(i),
    );
    const budgets = items.filter((i) => String(i.pk).startsWith('RATE#'));
    // One item per account (this test's and the healthy one's), never one per call; no account id in the key.
    expect(budgets).toHaveLength(2);
    for (const item of budgets) {
      expect(item.ttl).toBeGreaterThan(Date.now() / 1000);
      expect(JSON.stringify(item)).not.toContain('acct-');
    }
    for (const c of [a, b, scan]) c.client.destroy();
  }, 30_000);

  it('a 429 met in one container holds the callers of another until Retry-After', async () => {
    let clock = Date.now();
    const clockPorts = { now: () => clock, sleep: async (ms: number) => void (clock += ms) };
    const a = container(clockPorts);
    const b = container(clockPorts);
    const account = { ...connection, account: { ...connection.account, id: 'acct-429' } };
    expect(await admitRequest(a.deps, account, clock)).toEqual({ admitted: true });
    await recordCrmAnswer(a.deps, account, { status: 429, headers: { 'Retry-After': '5' } });
    // B has never seen this budget: its take fails on the table's condition, and it learns why.
    expect(await admitRequest(b.deps, account, clock + 1_000)).toEqual({
      admitted: false,
      retryAfterSeconds: 5,
    });
    const before = clock;
    expect(await admitRequest(b.deps, account, clock + 10_000)).toEqual({ admitted: true });
    expect(clock - before).toBeGreaterThanOrEqual(5_000);
    for (const c of [a, b]) c.client.destroy();
  });
});

describe('crm-request against sandbox CRMs allowing 10 per second', () => {
  let broker: TestBroker;
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    // Every sandbox CRM allows 10 per second, and the broker is told so (sandbox.env: <P>_RATE_LIMIT=10/1).
    broker = await startTestBroker({ env: { SANDBOX_RATE_LIMIT: '10/1' } });
    for (const provider of ['copper', 'close'] as const) {
      const { connectionId } = await connect(broker, provider, { ownerId: `owner-rate-${provider}` });
      if (!connectionId) throw new Error(`connect ${provider} failed`);
      ids[provider] = connectionId;
    }
  }, 60_000);
  afterAll(async () => broker?.close());

  const limiter = () => broker.server.sandbox.rateLimits;
  const request = (provider: 'copper' | 'close', path: string) =>
    broker.invoke('crm-request', {
      connectionId: ids[provider],
      ownerId: `owner-rate-${provider}`,
      method: 'GET',
      path,
    });
  const arrivalsSince = (provider: string, since: number): SandboxArrival[] =>
    limiter()
      .arrivals()
      .filter((x) => x.provider === provider && x.at >= since);

  it(`${CALLERS} concurrent callers: the CRM never sees more than 10 in any second and answers no 429`, async () => {
    // After the connect flow's identity calls have left the window.
    await new Promise((r) => setTimeout(r, 1_100));
    const since = Date.now();
    const answers = await Promise.all(Array.from({ length: CALLERS }, () => request('copper', '/account')));
    expect(answers.filter((a) => !a.ok || a.value.status !== 200)).toEqual([]);
    const seen = arrivalsSince('copper', since);
    expect(seen).toHaveLength(CALLERS);
    expect(
      busiestWindow(
        seen.map((x) => x.at),
        1000,
      ),
    ).toBeLessThanOrEqual(10);
    expect(seen.filter((x) => x.status === 429)).toHaveLength(0);
  }, 60_000);

  it('learns a lower limit from Close’s headers; once learned, the CRM sees no more and answers no 429', async () => {
    // The CRM now allows 5 per second; the broker still believes 10 until an answer says otherwise.
    limiter().setLimit('close', { requests: 5, windowSeconds: 1 });
    const since = Date.now();
    const answers = await Promise.all(Array.from({ length: 20 }, () => request('close', '/me/')));
    for (const answer of answers) expect(answer).toMatchObject({ ok: true });
    const seen = arrivalsSince('close', since);
    const learnedAt = (seen[0] as SandboxArrival).at;
    // Whatever the first answer could not prevent, every request after it is within the limit.
    const afterwards = seen.filter((x) => x.at > learnedAt);
    expect(afterwards.filter((x) => x.status === 429)).toHaveLength(0);
    expect(
      busiestWindow(
        afterwards.map((x) => x.at),
        1000,
      ),
    ).toBeLessThanOrEqual(5);
    expect(answers.filter((a) => a.ok && a.value.status === 200)).toHaveLength(20);
  }, 60_000);

  it('a window spent for longer than a caller can wait: status 429 with retryAfterSeconds, no CRM call', async () => {
    // 1 request per 10 minutes: the next answer says remaining=0 and a reset 600 s away.
    limiter().setLimit('close', { requests: 1, windowSeconds: 600 });
    const first = await request('close', '/me/');
    expect(first).toMatchObject({ ok: true, value: { status: 200 } });
    const since = Date.now();
    const answers = await Promise.all(Array.from({ length: 10 }, () => request('close', '/me/')));
    for (const answer of answers) {
      expect(answer.ok).toBe(true);
      if (!answer.ok) continue;
      expect(answer.value.status).toBe(429);
      expect(answer.value.retryAfterSeconds).toBeGreaterThan(500);
      expect(answer.value.retryAfterSeconds).toBeLessThanOrEqual(600);
    }
    expect(arrivalsSince('close', since)).toHaveLength(0);
  }, 60_000);
});
