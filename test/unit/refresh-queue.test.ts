/**
 * The refresh queues' timing chain (functions/core/domain/refresh-queue.ts) and
 * the in-process queue the local server and the bench use (local/refresh-queue.ts):
 * each CRM's worker cap, partial batch failures delivered again, dead letters.
 */
import type { SQSEvent } from 'aws-lambda';
import { describe, expect, it, vi } from 'vitest';
import {
  CLAIM_WINDOW_SECONDS,
  QUEUE_MAX_RECEIVE_COUNT,
  QUEUE_VISIBILITY_TIMEOUT_SECONDS,
  type QueueMessage,
  WORKER_BATCH_SIZE,
  WORKER_MESSAGE_MAX_MS,
  WORKER_TIMEOUT_SECONDS,
  parseQueueMessage,
  workerShape,
} from '../../functions/core/domain/refresh-queue.ts';
import { MAX_WORKER_CAP, MAX_WORKER_INVOCATIONS, MIN_WORKER_CAP } from '../../manifest/refresh-queues.ts';
import { ANSWER_MARGIN_MS, AWS_CALL_MAX_MS, REFRESH_MAX_MS } from '../../functions/core/domain/timeline.ts';
import { functionSettings } from '../../manifest/functions.ts';
import { LocalRefreshQueue, type WorkerAnswer, localWorkerCaps } from '../../local/refresh-queue.ts';

const refresh = (connectionId: string, provider: QueueMessage['provider'] = 'close'): QueueMessage => ({
  kind: 'refresh',
  connectionId,
  provider,
  dueAt: 1,
});
const idsOf = (event: SQSEvent) =>
  event.Records.map((r) => (JSON.parse(r.body) as { connectionId: string }).connectionId);

describe('the timing chain', () => {
  it('a worker outlasts a whole message (read, refresh, event) twice, so one can start half-way through', () => {
    expect(WORKER_MESSAGE_MAX_MS).toBe(AWS_CALL_MAX_MS + REFRESH_MAX_MS + AWS_CALL_MAX_MS);
    expect(WORKER_TIMEOUT_SECONDS * 1000).toBeGreaterThanOrEqual(
      2 * WORKER_MESSAGE_MAX_MS + ANSWER_MARGIN_MS,
    );
    expect(functionSettings['refresh-worker'].timeoutSeconds).toBe(WORKER_TIMEOUT_SECONDS);
  });

  it('the visibility timeout is at least 6x the worker timeout (AWS, for SQS event sources)', () => {
    expect(QUEUE_VISIBILITY_TIMEOUT_SECONDS).toBeGreaterThanOrEqual(6 * WORKER_TIMEOUT_SECONDS);
  });

  it('a connection is handed out again only after SQS can no longer deliver its message', () => {
    expect(CLAIM_WINDOW_SECONDS).toBeGreaterThan(
      QUEUE_VISIBILITY_TIMEOUT_SECONDS * QUEUE_MAX_RECEIVE_COUNT + WORKER_TIMEOUT_SECONDS,
    );
  });

  it('the dispatcher runs well inside a minute, so a run per minute never piles up', () => {
    expect(functionSettings['refresh-scheduled'].timeoutSeconds).toBeLessThanOrEqual(60);
  });
});

describe('queue messages', () => {
  it('reads back what the dispatcher writes, and nothing else', () => {
    const message = refresh('conn_1');
    expect(parseQueueMessage(JSON.stringify(message))).toEqual(message);
    const pending = { kind: 'discard-pending', confirmationHash: 'h', provider: 'capsule', claimedUntil: 5 };
    expect(parseQueueMessage(JSON.stringify(pending))).toEqual(pending);
    // Sent by the claiming dispatcher before an upgrade, and still in a queue: its claim is its due time.
    const claimed = {
      kind: 'refresh',
      connectionId: 'conn_2',
      provider: 'close',
      version: 3,
      claimedUntil: 9,
    };
    expect(parseQueueMessage(JSON.stringify(claimed))).toEqual({
      kind: 'refresh',
      connectionId: 'conn_2',
      provider: 'close',
      version: 3,
      dueAt: 9,
    });
    for (const body of [
      'not json',
      'null',
      JSON.stringify({ ...message, provider: 'salesforce' }),
      JSON.stringify({ ...message, version: '1' }),
      JSON.stringify({ ...message, dueAt: 1.5 }),
      JSON.stringify({ ...message, dueAt: undefined }),
      JSON.stringify({ ...message, kind: 'delete' }),
    ]) {
      expect(parseQueueMessage(body), body).toBeUndefined();
    }
  });
});

describe("a CRM's cap as worker invocations of batches", () => {
  it('never more refreshes at once than the cap, at least the 2 invocations AWS allows, batches of at most 10', () => {
    for (let cap = MIN_WORKER_CAP; cap <= MAX_WORKER_CAP; cap++) {
      const { batchSize, invocations } = workerShape(cap);
      expect(batchSize * invocations, `cap ${cap}`).toBeLessThanOrEqual(cap);
      expect(invocations).toBeGreaterThanOrEqual(2);
      expect(invocations).toBeLessThanOrEqual(MAX_WORKER_INVOCATIONS);
      expect(batchSize).toBeGreaterThanOrEqual(1);
      expect(batchSize).toBeLessThanOrEqual(WORKER_BATCH_SIZE);
      // Nothing of the cap is wasted that a batch or an invocation more could use.
      expect(cap - batchSize * invocations, `cap ${cap}`).toBeLessThan(Math.max(batchSize, 2));
    }
    expect(workerShape(4)).toEqual({ batchSize: 2, invocations: 2 });
    expect(workerShape(100)).toEqual({ batchSize: 10, invocations: 10 });
    expect(workerShape(3)).toEqual({ batchSize: 1, invocations: 3 });
    expect(workerShape(1000)).toEqual({ batchSize: 10, invocations: 100 });
  });
});

describe('the local queue', () => {
  it("refreshes no more messages at once than a CRM's cap, in batches side by side", async () => {
    let inFlight = 0;
    let peak = 0;
    const sizes: number[] = [];
    const queue = new LocalRefreshQueue({
      caps: { copper: 2, capsule: 2, close: 4 },
      deliver: async (event) => {
        sizes.push(event.Records.length);
        inFlight += event.Records.length;
        peak = Math.max(peak, inFlight);
        await new Promise((resolve) => setTimeout(resolve, 20));
        inFlight -= event.Records.length;
        return {
          batchItemFailures: [],
          outcomes: Object.fromEntries(event.Records.map((r) => [r.messageId, 'refreshed'])),
        };
      },
    });
    const mark = queue.mark();
    await queue.send(Array.from({ length: 12 }, (_, i) => refresh(`c${i}`)));
    expect(await queue.settled(mark)).toEqual({ refreshed: 12 });
    expect(peak).toBe(4);
    expect(queue.peakInvocations.get('close')).toBe(2);
    expect(sizes).toEqual(Array(6).fill(2));
    queue.close();
  });

  it('never runs more worker invocations for a CRM than its cap, and runs the CRMs side by side', async () => {
    let running = 0;
    let peak = 0;
    const queue = new LocalRefreshQueue({
      caps: { copper: 2, capsule: 2, close: 3 },
      batchSize: 2,
      deliver: async (event) => {
        peak = Math.max(peak, ++running);
        await new Promise((resolve) => setTimeout(resolve, 20));
        running--;
        return {
          batchItemFailures: [],
          outcomes: Object.fromEntries(event.Records.map((r) => [r.messageId, 'refreshed'])),
        };
      },
    });
    const mark = queue.mark();
    await queue.send(Array.from({ length: 20 }, (_, i) => refresh(`c${i}`)));
    await queue.send(Array.from({ length: 8 }, (_, i) => refresh(`p${i}`, 'capsule')));
    expect(await queue.settled(mark)).toEqual({ refreshed: 28 });
    expect(queue.peakInvocations.get('close')).toBe(3);
    expect(queue.peakInvocations.get('capsule')).toBe(2);
    expect(peak).toBe(5);
    queue.close();
  });

  it('delivers again only the messages a batch reports as failed, and dead-letters one after the last receive', async () => {
    const delivered: string[][] = [];
    const queue = new LocalRefreshQueue({
      // Close: batches of up to 10, so the three go out together.
      caps: { copper: 2, capsule: 2, close: 20 },
      visibilityTimeoutMs: 5,
      deliver: async (event): Promise<WorkerAnswer> => {
        delivered.push(idsOf(event));
        const bad = event.Records.filter((r) => r.body.includes('"poison"')).map((r) => ({
          itemIdentifier: r.messageId,
        }));
        return {
          batchItemFailures: bad,
          outcomes: Object.fromEntries(
            event.Records.map((r) => [
              r.messageId,
              bad.some((b) => b.itemIdentifier === r.messageId) ? 'retry' : 'refreshed',
            ]),
          ),
        };
      },
    });
    const mark = queue.mark();
    await queue.send([refresh('a'), refresh('poison'), refresh('b')]);

    expect(await queue.settled(mark)).toEqual({ refreshed: 2, deadLettered: 1 });
    expect(delivered).toEqual([['a', 'poison', 'b'], ...Array(QUEUE_MAX_RECEIVE_COUNT - 1).fill(['poison'])]);
    expect(queue.depth().close).toEqual({ waiting: 0, inFlight: 0, deadLetters: 1 });
    queue.close();
  });

  it('delivers a failed message again even when its timer fires before Date.now() reaches its visibility', async () => {
    // A timer runs on the event loop's clock, read at its last turn: after a long turn it fires
    // while Date.now() is still short of the time it was set for. Here Date.now() runs 20 ms behind.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    try {
      let calls = 0;
      const queue = new LocalRefreshQueue({
        caps: { copper: 2, capsule: 2, close: 2 },
        visibilityTimeoutMs: 1_000,
        deliver: async (event) => {
          calls++;
          const outcome = calls === 1 ? 'retry' : 'refreshed';
          return {
            batchItemFailures:
              outcome === 'retry' ? event.Records.map((r) => ({ itemIdentifier: r.messageId })) : [],
            outcomes: Object.fromEntries(event.Records.map((r) => [r.messageId, outcome])),
          };
        },
      });
      const mark = queue.mark();
      await queue.send([refresh('a')]);
      await vi.advanceTimersByTimeAsync(0);
      expect(calls).toBe(1);
      vi.setSystemTime(Date.now() - 20);
      await vi.advanceTimersByTimeAsync(1_000);
      expect(calls).toBe(1);
      await vi.advanceTimersByTimeAsync(25);
      expect(calls).toBe(2);
      expect(await queue.settled(mark)).toEqual({ refreshed: 1 });
      queue.close();
    } finally {
      vi.useRealTimers();
    }
  });

  it('an invocation that fails as a whole fails every message of its batch', async () => {
    let calls = 0;
    const queue = new LocalRefreshQueue({
      // Close: batches of 2.
      caps: { copper: 2, capsule: 2, close: 4 },
      visibilityTimeoutMs: 5,
      deliver: async (event) => {
        if (++calls === 1) throw new Error('crashed');
        return {
          batchItemFailures: [],
          outcomes: Object.fromEntries(event.Records.map((r) => [r.messageId, 'skipped'])),
        };
      },
    });
    const mark = queue.mark();
    await queue.send([refresh('a'), refresh('b')]);
    expect(await queue.settled(mark)).toEqual({ skipped: 2 });
    expect(calls).toBe(2);
    queue.close();
  });

  it('takes each CRM cap from REFRESH_WORKER_CAP_<CRM>, within what AWS allows', () => {
    expect(localWorkerCaps({ REFRESH_WORKER_CAP_CLOSE: '7' })).toMatchObject({ close: 7, copper: 4 });
    expect(() => localWorkerCaps({ REFRESH_WORKER_CAP_COPPER: '1' })).toThrow(/REFRESH_WORKER_CAP_COPPER/);
    expect(() => localWorkerCaps({ REFRESH_WORKER_CAP_CLOSE: 'many' })).toThrow(/REFRESH_WORKER_CAP_CLOSE/);
  });
});
