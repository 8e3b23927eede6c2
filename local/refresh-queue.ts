/**
 * The refresh queues in process, for the local server and the bench: one queue
 * per CRM, each driving `refresh-worker` as an SQS event source mapping does,
 * with the same code and the same shape (workerShape): for a CRM's cap of
 * refreshes at once, batches of up to its batch size and at most its number
 * of invocations at once, partial batch failures delivered again
 * after the visibility timeout (scaled down locally) and dead-lettered after
 * `QUEUE_MAX_RECEIVE_COUNT` receives.
 */
import { randomUUID } from 'node:crypto';
import type { SQSEvent } from 'aws-lambda';
import type { RefreshQueue } from '../functions/core/ports.ts';
import { type ProviderId, providerIds } from '../functions/core/domain/providers.ts';
import type { MessageOutcome, QueueMessage } from '../functions/core/domain/refresh-queue.ts';
import {
  DEFAULT_WORKER_CAPS,
  MAX_WORKER_CAP,
  MIN_WORKER_CAP,
  QUEUE_MAX_RECEIVE_COUNT,
  workerShape,
} from '../manifest/refresh-queues.ts';
import { integerIn } from '../manifest/functions.ts';

/** What a worker invocation answers (functions/refresh-worker.ts): the failures, and each outcome. */
export interface WorkerAnswer {
  batchItemFailures: { itemIdentifier: string }[];
  outcomes?: Record<string, MessageOutcome>;
}

export interface LocalQueueOptions {
  /** Each CRM's cap: its refreshes at once, carried as invocations at once of batches (workerShape). */
  caps: Readonly<Record<ProviderId, number>>;
  /** Invokes the worker with an SQS event. */
  deliver: (event: SQSEvent) => Promise<WorkerAnswer>;
  /** Smaller batches than the cap's shape gives (never larger). */
  batchSize?: number;
  /** Before a failed message is delivered again (SQS: the visibility timeout); default 1 s locally. */
  visibilityTimeoutMs?: number;
  maxReceiveCount?: number;
  /** Told of an invocation that failed as a whole (every message of its batch is delivered again). */
  onInvocationError?: (err: unknown) => void;
}

/** Where each CRM's messages are: waiting (visible or not yet), with a worker, dead-lettered. */
export interface QueueDepth {
  waiting: number;
  inFlight: number;
  deadLetters: number;
}

/** A message's end: what the worker did with it, or the dead-letter queue. */
export type FinalOutcome = Exclude<MessageOutcome, 'retry'> | 'deadLettered';

interface Entry {
  readonly seq: number;
  readonly id: string;
  readonly provider: ProviderId;
  readonly body: string;
  receiveCount: number;
  visibleAt: number;
}

/** Each CRM's worker cap: `REFRESH_WORKER_CAP_<CRM>` when set (2 to 10,000), else the deployed default. */
export function localWorkerCaps(
  env: Readonly<Record<string, string | undefined>>,
): Record<ProviderId, number> {
  const caps = { ...DEFAULT_WORKER_CAPS };
  for (const provider of providerIds) {
    const name = `REFRESH_WORKER_CAP_${provider.toUpperCase()}`;
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    const cap = integerIn(raw.trim(), MIN_WORKER_CAP, MAX_WORKER_CAP, true);
    if (cap === undefined)
      throw new Error(`${name} must be an integer from ${MIN_WORKER_CAP} to ${MAX_WORKER_CAP}`);
    caps[provider] = cap;
  }
  return caps;
}

export class LocalRefreshQueue implements RefreshQueue {
  private readonly waiting = new Map<ProviderId, Entry[]>(providerIds.map((p) => [p, []]));
  private readonly running = new Map<ProviderId, number>(providerIds.map((p) => [p, 0]));
  private readonly inFlightMessages = new Map<ProviderId, number>(providerIds.map((p) => [p, 0]));
  private readonly dead = new Map<ProviderId, Entry[]>(providerIds.map((p) => [p, []]));
  private readonly finals = new Map<number, FinalOutcome>();
  private readonly timers = new Set<NodeJS.Timeout>();
  /** Per CRM, its armed wake-up: when (epoch ms) it pumps again, and its timer. */
  private readonly wakeUps = new Map<ProviderId, { at: number; timer: NodeJS.Timeout }>();
  private readonly listeners = new Set<() => void>();
  private seq = 0;
  private closed = false;
  /** The most worker invocations seen at once per CRM (what the cap bounds). */
  readonly peakInvocations = new Map<ProviderId, number>(providerIds.map((p) => [p, 0]));

  constructor(private readonly options: LocalQueueOptions) {}

  send(messages: readonly QueueMessage[]): Promise<{ failed: number }> {
    const touched = new Set<ProviderId>();
    for (const message of messages) {
      const entry: Entry = {
        seq: ++this.seq,
        id: randomUUID(),
        provider: message.provider,
        body: JSON.stringify(message),
        receiveCount: 0,
        visibleAt: 0,
      };
      this.waiting.get(message.provider)?.push(entry);
      touched.add(message.provider);
    }
    for (const provider of touched) this.pump(provider);
    return Promise.resolve({ failed: 0 });
  }

  depth(): Record<ProviderId, QueueDepth> {
    return Object.fromEntries(
      providerIds.map((p) => [
        p,
        {
          waiting: this.waiting.get(p)?.length ?? 0,
          inFlight: this.inFlightMessages.get(p) ?? 0,
          deadLetters: this.dead.get(p)?.length ?? 0,
        },
      ]),
    ) as Record<ProviderId, QueueDepth>;
  }

  /** The last message sent so far: `settled(mark())` later waits for everything sent after it. */
  mark(): number {
    return this.seq;
  }

  /** Waits until every message sent after `since` has ended; answers how many ended each way. */
  async settled(since: number): Promise<Partial<Record<FinalOutcome, number>>> {
    const until = this.seq;
    const done = () => {
      for (let s = since + 1; s <= until; s++) if (!this.finals.has(s)) return false;
      return true;
    };
    while (!done() && !this.closed) {
      await new Promise<void>((resolve) => {
        const listener = () => {
          this.listeners.delete(listener);
          resolve();
        };
        this.listeners.add(listener);
      });
    }
    const counts: Partial<Record<FinalOutcome, number>> = {};
    for (let s = since + 1; s <= until; s++) {
      const outcome = this.finals.get(s);
      if (outcome) counts[outcome] = (counts[outcome] ?? 0) + 1;
    }
    return counts;
  }

  close(): void {
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.notify();
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }

  /** Starts worker invocations for `provider` while its cap allows and messages are visible. */
  private pump(provider: ProviderId): void {
    const queue = this.waiting.get(provider) ?? [];
    const shape = workerShape(this.options.caps[provider]);
    const batchSize = Math.min(shape.batchSize, this.options.batchSize ?? shape.batchSize);
    while (!this.closed && (this.running.get(provider) ?? 0) < shape.invocations) {
      const now = Date.now();
      const batch: Entry[] = [];
      for (let i = 0; i < queue.length && batch.length < batchSize;) {
        const entry = queue[i] as Entry;
        if (entry.visibleAt <= now) {
          batch.push(entry);
          queue.splice(i, 1);
        } else i++;
      }
      if (batch.length === 0) return this.wakeWhenVisible(provider, queue, now);
      const running = (this.running.get(provider) ?? 0) + 1;
      this.running.set(provider, running);
      this.peakInvocations.set(provider, Math.max(this.peakInvocations.get(provider) ?? 0, running));
      this.inFlightMessages.set(provider, (this.inFlightMessages.get(provider) ?? 0) + batch.length);
      void this.invoke(provider, batch);
    }
  }

  /**
   * Pumps again when the first waiting message becomes visible. A timer's
   * clock (the event loop's, read at its last turn) can run behind Date.now(),
   * so a timer may fire a little before the time it was set for: pump then
   * finds nothing visible yet and comes back here for the rest of the wait.
   */
  private wakeWhenVisible(provider: ProviderId, queue: readonly Entry[], now: number): void {
    if (queue.length === 0 || this.closed) return;
    const at = queue.reduce((soonest, e) => Math.min(soonest, e.visibleAt), Infinity);
    const armed = this.wakeUps.get(provider);
    if (armed && armed.at <= at) return;
    if (armed) {
      clearTimeout(armed.timer);
      this.timers.delete(armed.timer);
    }
    const timer = setTimeout(
      () => {
        this.timers.delete(timer);
        this.wakeUps.delete(provider);
        this.pump(provider);
      },
      Math.max(1, at - now),
    );
    timer.unref();
    this.timers.add(timer);
    this.wakeUps.set(provider, { at, timer });
  }

  private async invoke(provider: ProviderId, batch: Entry[]): Promise<void> {
    for (const entry of batch) entry.receiveCount++;
    let answer: WorkerAnswer | undefined;
    try {
      answer = await this.options.deliver(sqsEvent(provider, batch));
    } catch (err) {
      this.options.onInvocationError?.(err);
    }
    // A failed invocation fails its whole batch, as with SQS.
    const failed = new Set(
      answer ? answer.batchItemFailures.map((f) => f.itemIdentifier) : batch.map((e) => e.id),
    );
    const visibilityMs = this.options.visibilityTimeoutMs ?? 1_000;
    for (const entry of batch) {
      if (!failed.has(entry.id)) {
        const outcome = answer?.outcomes?.[entry.id];
        this.finals.set(entry.seq, outcome && outcome !== 'retry' ? outcome : 'skipped');
      } else if (entry.receiveCount >= (this.options.maxReceiveCount ?? QUEUE_MAX_RECEIVE_COUNT)) {
        this.dead.get(provider)?.push(entry);
        this.finals.set(entry.seq, 'deadLettered');
      } else {
        entry.visibleAt = Date.now() + visibilityMs;
        this.waiting.get(provider)?.push(entry);
      }
    }
    this.running.set(provider, (this.running.get(provider) ?? 1) - 1);
    this.inFlightMessages.set(provider, (this.inFlightMessages.get(provider) ?? batch.length) - batch.length);
    this.notify();
    this.pump(provider);
  }
}

/** The event an SQS event source mapping hands the worker. */
function sqsEvent(provider: ProviderId, batch: readonly Entry[]): SQSEvent {
  return {
    Records: batch.map((entry) => ({
      messageId: entry.id,
      receiptHandle: `local-${entry.id}-${entry.receiveCount}`,
      body: entry.body,
      attributes: {
        ApproximateReceiveCount: String(entry.receiveCount),
        SentTimestamp: '0',
        SenderId: 'local',
        ApproximateFirstReceiveTimestamp: '0',
      },
      messageAttributes: {},
      md5OfBody: '',
      eventSource: 'aws:sqs',
      eventSourceARN: `arn:aws:sqs:local:000000000000:refresh-${provider}`,
      awsRegion: 'local',
    })),
  };
}
