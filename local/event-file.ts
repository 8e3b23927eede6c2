/**
 * The local server's lifecycle events, kept across restarts: the latest events in memory for the
 * demo page, each one also appended to `.data/events.jsonl` and read back at startup. Events carry
 * ids and reasons only, never a token (events.ts), so the file holds nothing secret.
 */
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { MemoryEventLog } from '../functions/adapters/eventbridge/events.ts';
import type { BrokerEvent } from '../functions/core/domain/events.ts';

/** How many events the page shows and the file keeps (it is rewritten when it grows past twice this). */
export const KEPT_EVENTS = 200;

const isEvent = (value: unknown): value is BrokerEvent => {
  const e = value as Partial<BrokerEvent> | null;
  return (
    typeof e?.type === 'string' &&
    typeof e.detail?.connectionId === 'string' &&
    typeof e.detail.provider === 'string' &&
    typeof e.detail.at === 'string'
  );
};

export class FileEventLog extends MemoryEventLog {
  private lines: number;

  constructor(
    private readonly file: string,
    private readonly onEvent?: (event: BrokerEvent) => void,
  ) {
    super(KEPT_EVENTS);
    const kept = existsSync(file) ? readFileSync(file, 'utf8').split('\n') : [];
    for (const line of kept) {
      if (!line.trim()) continue;
      try {
        const event: unknown = JSON.parse(line);
        if (isEvent(event)) this.events.push(event);
      } catch {
        // A line cut short by a crash: skip it, keep the rest.
      }
    }
    this.events.splice(0, Math.max(0, this.events.length - KEPT_EVENTS));
    this.lines = this.events.length;
    this.rewrite();
  }

  override async publish(event: BrokerEvent): Promise<void> {
    await super.publish(event);
    this.onEvent?.(event);
    try {
      if (this.lines >= 2 * KEPT_EVENTS) this.rewrite();
      appendFileSync(this.file, `${JSON.stringify(event)}\n`, { mode: 0o600 });
      this.lines += 1;
    } catch (err) {
      // Best effort, as on EventBridge: a full disk must not fail the request that caused the event.
      console.warn('local server: event not written to', this.file, (err as Error).name);
    }
  }

  private rewrite() {
    writeFileSync(this.file, this.events.map((e) => `${JSON.stringify(e)}\n`).join(''), { mode: 0o600 });
    this.lines = this.events.length;
  }
}
