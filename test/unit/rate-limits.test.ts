/**
 * The shared rate budget (issue 14): each CRM's headers parsed into one shape,
 * the GCRA arithmetic, and the use case (admit, wait, refuse, learn, 429) with a
 * fake clock and an in-memory store that keeps the adapter's conditions.
 */
import { describe, expect, it } from 'vitest';
import {
  ARRIVAL_JITTER_MS,
  budgetShape,
  earliestStart,
  parseRateLimitHeaders,
  parseRateLimitSetting,
  parseRetryAfter,
  tatAfterTake,
  tatFloor,
} from '../../functions/core/domain/rate-limits.ts';
import { resolveProviders } from '../../functions/core/domain/providers.ts';
import type { ConnectionRecord } from '../../functions/core/domain/records.ts';
import type {
  Deps,
  RateBudgetRestriction,
  RateBudgetState,
  RateBudgetStore,
  RateBudgetTake,
} from '../../functions/core/ports.ts';
import {
  LIMIT_RELEARN_MS,
  admitRequest,
  budgetId,
  recordCrmAnswer,
} from '../../functions/core/use-cases/rate-budget.ts';

const NOW = 1_800_000_000_000;

describe('parsing each CRM’s rate-limit headers', () => {
  it('reads Close’s RateLimit fields, reset in seconds from now, in any case and order', () => {
    expect(
      parseRateLimitHeaders('ratelimit-fields', { RateLimit: 'limit=100, remaining=50, reset=5' }, NOW),
    ).toEqual({ limit: 100, remaining: 50, resetAt: NOW + 5000 });
    expect(
      parseRateLimitHeaders('ratelimit-fields', { ratelimit: 'Reset=0.25;REMAINING=0 , Limit=20' }, NOW),
    ).toEqual({ limit: 20, remaining: 0, resetAt: NOW + 250 });
  });

  it('reads Close’s retry-after on a 429', () => {
    expect(
      parseRateLimitHeaders(
        'ratelimit-fields',
        { 'retry-after': '3', ratelimit: 'limit=20, remaining=0, reset=3' },
        NOW,
      ),
    ).toEqual({ limit: 20, remaining: 0, resetAt: NOW + 3000, retryAfterMs: 3000 });
  });

  it('reads Capsule’s X-RateLimit-* with the reset as epoch seconds', () => {
    const reset = NOW / 1000 + 1200;
    expect(
      parseRateLimitHeaders(
        'x-ratelimit-epoch',
        { 'x-ratelimit-limit': '4000', 'X-RateLimit-Remaining': '3999', 'X-RATELIMIT-RESET': String(reset) },
        NOW,
      ),
    ).toEqual({ limit: 4000, remaining: 3999, resetAt: reset * 1000 });
  });

  it('reads only Retry-After for Copper, whatever other headers say', () => {
    expect(
      parseRateLimitHeaders('none', { 'Retry-After': '7', RateLimit: 'limit=1, remaining=0, reset=9' }, NOW),
    ).toEqual({ retryAfterMs: 7000 });
    expect(parseRateLimitHeaders('none', {}, NOW)).toEqual({});
  });

  it('ignores each garbage value on its own, never yielding NaN', () => {
    const garbage = [
      'limit=abc, remaining=-1, reset=1e9',
      'limit=Infinity, remaining=NaN, reset=0x10',
      'limit=, remaining, reset=-3',
      '=5, ,,;;',
      'limit=10 20, remaining=3.5.1, reset=99999999999999999999',
    ];
    for (const value of garbage) {
      const parsed = parseRateLimitHeaders('ratelimit-fields', { ratelimit: value }, NOW);
      expect(parsed, value).toEqual({});
    }
    // A good field survives a bad neighbour.
    expect(parseRateLimitHeaders('ratelimit-fields', { ratelimit: 'limit=x, remaining=4' }, NOW)).toEqual({
      remaining: 4,
    });
    const capsule = parseRateLimitHeaders(
      'x-ratelimit-epoch',
      {
        'x-ratelimit-limit': '0',
        'x-ratelimit-remaining': 'lots',
        'x-ratelimit-reset': String(NOW / 1000 - 5),
      },
      NOW,
    );
    // A zero limit is no limit to learn; a reset in the past is stale.
    expect(capsule).toEqual({});
    for (const value of Object.values(capsule)) expect(Number.isNaN(value)).toBe(false);
  });

  it('reads Retry-After as seconds or an HTTP date, and nothing else', () => {
    expect(parseRetryAfter('120', NOW)).toBe(120_000);
    expect(parseRetryAfter(' 1.5 ', NOW)).toBe(1500);
    expect(parseRetryAfter(new Date(NOW + 30_000).toUTCString(), NOW)).toBe(30_000);
    expect(parseRetryAfter(new Date(NOW - 30_000).toUTCString(), NOW)).toBe(0);
    for (const bad of ['', '-1', 'soon', '1e3', '0x20', 'NaN', '2026-12-01T10:00:00Z', `${10 ** 9}`]) {
      expect(parseRetryAfter(bad, NOW), bad).toBeUndefined();
    }
    expect(parseRetryAfter(undefined, NOW)).toBeUndefined();
  });
});

describe('configured budgets', () => {
  it('has each CRM’s documented default', () => {
    const providers = resolveProviders({});
    expect(providers.copper.rateLimit).toMatchObject({ requests: 180, windowSeconds: 60, headers: 'none' });
    expect(providers.capsule.rateLimit).toMatchObject({
      requests: 4000,
      windowSeconds: 3600,
      headers: 'x-ratelimit-epoch',
      scope: 'user',
    });
    expect(providers.close.rateLimit).toMatchObject({
      requests: 10,
      windowSeconds: 1,
      headers: 'ratelimit-fields',
    });
  });

  it('takes <P>_RATE_LIMIT=<requests>/<seconds> and refuses anything else', () => {
    const providers = resolveProviders({ COPPER_RATE_LIMIT: '10/1' });
    expect(providers.copper.rateLimit).toEqual({
      requests: 10,
      windowSeconds: 1,
      headers: 'none',
      scope: 'account',
    });
    expect(parseRateLimitSetting('4000 / 3600', 'X')).toEqual({ requests: 4000, windowSeconds: 3600 });
    for (const bad of ['0/60', '10/0', '10', 'ten/1', '10/-1', '1.5/1']) {
      expect(() => resolveProviders({ CLOSE_RATE_LIMIT: bad }), bad).toThrow(/CLOSE_RATE_LIMIT/);
    }
  });
});

describe('GCRA arithmetic', () => {
  it('spreads 10 per second as one at a time, with room for arrival jitter', () => {
    expect(budgetShape(10, 1)).toEqual({ intervalMs: 120, toleranceMs: 0, burst: 1 });
    expect(budgetShape(180, 60)).toMatchObject({ burst: 18 });
  });

  /** Greedy callers with a fake clock: every request starts at its earliest slot. */
  function starts(requests: number, windowSeconds: number, total: number, arrivalsEveryMs: number) {
    const shape = budgetShape(requests, windowSeconds);
    let tat: number | undefined;
    const out: number[] = [];
    for (let i = 0; i < total; i++) {
      const now = NOW + i * arrivalsEveryMs;
      const start = earliestStart(tat, shape, now);
      tat = tatAfterTake(tat, shape, start);
      out.push(start);
    }
    return out;
  }

  /** The most starts in any sliding window of `windowMs` (half-open), each start shifted by up to `jitterMs`. */
  function busiestWindow(times: number[], windowMs: number, jitterMs = 0) {
    // Worst case for the window: the earliest start arrives as late as it can, the later ones as early.
    let most = 0;
    for (let i = 0; i < times.length; i++) {
      const first = (times[i] as number) + jitterMs;
      let n = 0;
      for (let j = i; j < times.length && (times[j] as number) < first + windowMs; j++) n++;
      most = Math.max(most, n);
    }
    return most;
  }

  it.each([
    [10, 1],
    [180, 60],
    [4000, 3600],
    [3, 1],
    [1, 1],
  ])('never lets more than %i start in any %i s window, even with arrival jitter', (requests, seconds) => {
    const times = starts(requests, seconds, requests * 5, 0);
    expect(busiestWindow(times, seconds * 1000, ARRIVAL_JITTER_MS)).toBeLessThanOrEqual(requests);
    // ...and uses most of it: at least 90 % of the limit over a long run.
    const span = (times.at(-1) as number) - (times[0] as number);
    expect(((times.length - 1) / span) * seconds * 1000).toBeGreaterThanOrEqual(requests * 0.9 - 1);
  });

  it('lets a burst of a tenth of the limit start at once after a quiet spell', () => {
    const times = starts(180, 60, 30, 0);
    expect(times.filter((t) => t === NOW)).toHaveLength(18);
  });

  it('puts the next slot after a 429’s Retry-After, or a spent window’s reset', () => {
    const shape = budgetShape(10, 1);
    const after429 = tatFloor({ retryAfterMs: 2000 }, true, shape, NOW) as number;
    expect(earliestStart(after429, shape, NOW)).toBe(NOW + 2000);
    const spent = tatFloor({ remaining: 0, resetAt: NOW + 700 }, false, shape, NOW) as number;
    expect(earliestStart(spent, shape, NOW)).toBe(NOW + 700);
    // A bare 429 (Copper): about a tenth of the window (the time the budget takes to earn its burst back).
    const copper = budgetShape(180, 60);
    const wait = earliestStart(tatFloor({}, true, copper, NOW), copper, NOW) - NOW;
    expect(wait).toBeGreaterThanOrEqual(6000);
    expect(wait).toBeLessThanOrEqual(7000);
    expect(tatFloor({ remaining: 5 }, false, shape, NOW)).toBeUndefined();
  });

  it('leaves exactly `remaining` slots before the CRM’s reset', () => {
    const shape = budgetShape(10, 1);
    const resetAt = NOW + 1000;
    let tat = tatFloor({ remaining: 4, resetAt }, false, shape, NOW) as number;
    let before = 0;
    for (let i = 0; i < 10; i++) {
      const start = earliestStart(tat, shape, NOW);
      if (start < resetAt) before++;
      tat = tatAfterTake(tat, shape, start);
    }
    expect(before).toBe(4);
  });
});

/** The adapter's conditions, in memory, counting store operations. */
class MemoryBudgets implements RateBudgetStore {
  readonly items = new Map<string, RateBudgetState>();
  private readonly seen = new Map<string, RateBudgetState>();
  operations = 0;

  cached(id: string) {
    return this.seen.get(id);
  }

  async take(id: string, take: RateBudgetTake) {
    this.operations++;
    const item = { ...this.items.get(id) };
    const ok =
      take.kind === 'idle'
        ? item.tat === undefined || item.tat <= take.now
        : item.tat !== undefined && item.tat > take.now && item.tat <= take.latestTat;
    if (ok) {
      item.tat = take.kind === 'idle' ? take.tat : (item.tat as number) + take.intervalMs;
      this.items.set(id, item);
    }
    this.seen.set(id, { ...item });
    return { taken: ok, state: { ...item } };
  }

  async read(id: string) {
    this.operations++;
    const item = { ...this.items.get(id) };
    this.seen.set(id, { ...item });
    return item;
  }

  async restrict(id: string, change: RateBudgetRestriction) {
    this.operations++;
    const item = { ...this.items.get(id) };
    if (change.tatAtLeast !== undefined && (item.tat === undefined || item.tat < change.tatAtLeast)) {
      item.tat = change.tatAtLeast;
    }
    if (change.blockedUntil !== undefined && (item.blockedUntil ?? 0) < change.blockedUntil) {
      item.blockedUntil = change.blockedUntil;
    }
    if (change.limit !== undefined) {
      item.limit = change.limit;
      item.limitLearnedAt = change.limitLearnedAt as number;
    }
    this.items.set(id, item);
    this.seen.set(id, { ...item });
  }
}

function world(env: Record<string, string> = {}) {
  let clock = NOW;
  const slept: number[] = [];
  const budgets = new MemoryBudgets();
  const deps = {
    config: { providers: resolveProviders(env) },
    rateBudgets: budgets,
    now: () => clock,
    sleep: async (ms: number) => {
      slept.push(ms);
      clock += ms;
    },
    logger: { info: () => undefined, warn: () => undefined, error: () => undefined },
  } as unknown as Deps;
  return {
    deps,
    budgets,
    slept,
    now: () => clock,
    advance: (ms: number) => {
      clock += ms;
    },
  };
}

const connection = (provider: 'copper' | 'capsule' | 'close', userEmail = 'a@x.test') =>
  ({
    connectionId: `conn_${provider}`,
    ownerId: 'o',
    provider,
    account: { id: 'acct-1', name: null, userEmail },
  }) as ConnectionRecord;

describe('admitRequest and recordCrmAnswer', () => {
  it('costs one store operation per call while the budget is healthy, and none after the answer', async () => {
    const w = world({ COPPER_RATE_LIMIT: '10/1' });
    const c = connection('copper');
    for (let i = 0; i < 20; i++) {
      expect(await admitRequest(w.deps, c, w.now() + 10_000)).toEqual({ admitted: true });
      await recordCrmAnswer(w.deps, c, { status: 200, headers: {} });
      w.advance(150);
    }
    expect(w.budgets.operations).toBe(20);
    expect(w.slept).toEqual([]);
  });

  it('waits for a reserved slot when the wait fits the deadline, else refuses with retryAfterSeconds', async () => {
    const w = world({ COPPER_RATE_LIMIT: '10/1' });
    const c = connection('copper');
    const deadline = w.now() + 1000;
    const start = w.now();
    const answers = [];
    const admittedAt: number[] = [];
    for (let i = 0; i < 15; i++) {
      const answer = await admitRequest(w.deps, c, deadline);
      answers.push(answer);
      if (answer.admitted) admittedAt.push(w.now() - start);
    }
    // One at a time, 120 ms apart, for as long as a slot starts by the deadline: 0, 120, ..., 960.
    expect(admittedAt).toEqual(Array.from({ length: 9 }, (_, i) => i * 120));
    const refused = answers.filter((a) => !a.admitted);
    expect(refused).toHaveLength(6);
    for (const r of refused) expect(r).toEqual({ admitted: false, retryAfterSeconds: 1 });
    // Each admitted caller costs its one write (waits this short read nothing); a refusal already
    // known from this process's view costs nothing.
    expect(w.budgets.operations).toBe(9);
  });

  it('a caller waiting a longer while reads the budget once before its slot', async () => {
    const w = world({ COPPER_RATE_LIMIT: '1/1' });
    const c = connection('copper');
    await admitRequest(w.deps, c, w.now() + 10_000);
    expect(w.budgets.operations).toBe(1);
    // The next slot is 1.2 s away: one write to reserve it, one read just before it.
    expect(await admitRequest(w.deps, c, w.now() + 10_000)).toEqual({ admitted: true });
    expect(w.budgets.operations).toBe(3);
  });

  it('holds every caller of the account after a 429 until Retry-After, then admits', async () => {
    const w = world({ CLOSE_RATE_LIMIT: '10/1' });
    const c = connection('close');
    expect(await admitRequest(w.deps, c, w.now())).toEqual({ admitted: true });
    await recordCrmAnswer(w.deps, c, { status: 429, headers: { 'Retry-After': '3' } });
    // Another connection of the same Close organization (another owner) shares the budget.
    const sibling = { ...c, connectionId: 'conn_other', ownerId: 'p' };
    expect(await admitRequest(w.deps, sibling, w.now() + 1000)).toEqual({
      admitted: false,
      retryAfterSeconds: 3,
    });
    expect(await admitRequest(w.deps, sibling, w.now() + 5000)).toEqual({ admitted: true });
    expect(w.slept.reduce((a, b) => a + b, 0)).toBe(3000);
  });

  it('a caller waiting for its slot when another meets a 429 queues again behind the block', async () => {
    const w = world({ CLOSE_RATE_LIMIT: '10/1' });
    const c = connection('close');
    expect(await admitRequest(w.deps, c, w.now() + 10_000)).toEqual({ admitted: true });
    const start = w.now();
    // While the second caller sleeps towards its slot, the first caller's answer is a 429.
    const sleep = w.deps.sleep;
    let first = true;
    w.deps.sleep = async (ms) => {
      if (first) {
        first = false;
        await recordCrmAnswer(w.deps, c, { status: 429, headers: { 'retry-after': '2' } });
      }
      await sleep(ms);
    };
    expect(await admitRequest(w.deps, c, w.now() + 10_000)).toEqual({ admitted: true });
    expect(w.now() - start).toBeGreaterThanOrEqual(2000);
    // ...and with no time for the block, it is refused with the block's wait.
    const w2 = world({ CLOSE_RATE_LIMIT: '10/1' });
    await admitRequest(w2.deps, c, w2.now());
    const sleep2 = w2.deps.sleep;
    w2.deps.sleep = async (ms) => {
      await recordCrmAnswer(w2.deps, c, { status: 429, headers: { 'retry-after': '30' } });
      await sleep2(ms);
    };
    expect(await admitRequest(w2.deps, c, w2.now() + 10_000)).toEqual({
      admitted: false,
      retryAfterSeconds: 30,
    });
  });

  it('holds callers when the CRM says the window is spent, until its reset', async () => {
    const w = world();
    const c = connection('capsule');
    await admitRequest(w.deps, c, w.now());
    const reset = Math.ceil((w.now() + 90_000) / 1000);
    await recordCrmAnswer(w.deps, c, {
      status: 200,
      headers: {
        'X-RateLimit-Limit': '4000',
        'X-RateLimit-Remaining': '0',
        'X-RateLimit-Reset': String(reset),
      },
    });
    const refused = await admitRequest(w.deps, c, w.now() + 60_000);
    expect(refused.admitted).toBe(false);
    expect(refused.admitted === false && refused.retryAfterSeconds).toBe(90);
  });

  it('learns a lower limit from the headers at once, a higher one only after an hour', async () => {
    const w = world();
    const c = connection('close');
    const id = budgetId(c, w.deps.config.providers.close.rateLimit);
    const answer = (limit: number) => ({
      status: 200,
      headers: { ratelimit: `limit=${limit}, remaining=${limit - 1}, reset=1` },
    });
    await admitRequest(w.deps, c, w.now());
    await recordCrmAnswer(w.deps, c, answer(4));
    expect(w.budgets.items.get(id)?.limit).toBe(4);
    const ops = w.budgets.operations;
    await recordCrmAnswer(w.deps, c, answer(4));
    expect(w.budgets.operations).toBe(ops);
    await recordCrmAnswer(w.deps, c, answer(40));
    expect(w.budgets.items.get(id)?.limit).toBe(4);
    w.advance(LIMIT_RELEARN_MS);
    await recordCrmAnswer(w.deps, c, answer(40));
    expect(w.budgets.items.get(id)?.limit).toBe(40);
  });

  it('keeps Capsule’s budget per user and the others’ per account', () => {
    const providers = resolveProviders({});
    expect(budgetId(connection('capsule', 'a@x'), providers.capsule.rateLimit)).not.toBe(
      budgetId(connection('capsule', 'b@x'), providers.capsule.rateLimit),
    );
    expect(budgetId(connection('close', 'a@x'), providers.close.rateLimit)).toBe(
      budgetId(connection('close', 'b@x'), providers.close.rateLimit),
    );
    expect(budgetId(connection('close'), providers.close.rateLimit)).not.toBe(
      budgetId(connection('copper'), providers.copper.rateLimit),
    );
  });

  it('answers the CRM even when the budget cannot be written', async () => {
    const w = world();
    w.budgets.restrict = async () => {
      throw Object.assign(new Error('throttled'), { name: 'ProvisionedThroughputExceededException' });
    };
    await expect(
      recordCrmAnswer(w.deps, connection('close'), { status: 429, headers: { 'retry-after': '1' } }),
    ).resolves.toBeUndefined();
  });
});
