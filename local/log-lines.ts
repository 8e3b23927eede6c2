/**
 * Short human log lines for `npm start`. In AWS every line is Powertools JSON (CloudWatch and its
 * queries want that); on a developer's terminal a ~450-character JSON object per request hides what
 * happened, so the local process rewrites those lines: level, function, message, then the fields
 * that say something (ids, codes, error names). The logger never logs a token (logger.ts), so
 * nothing here needs redacting; fields are only dropped.
 */

export interface HumanLogOptions {
  /** Colour the level (a terminal). */
  color?: boolean;
}

/** Context every Powertools line repeats; locally it is noise. */
const DROPPED = new Set([
  'level',
  'message',
  'timestamp',
  'service',
  'function',
  'cold_start',
  'function_arn',
  'function_memory_size',
  'function_name',
  'function_request_id',
  'xray_trace_id',
  'sampling_rate',
]);

const COLORS: Record<string, string> = { ERROR: '\x1b[31m', CRITICAL: '\x1b[31m', WARN: '\x1b[33m' };

const show = (value: unknown): string =>
  typeof value === 'string' ? (/\s/.test(value) ? JSON.stringify(value) : value) : JSON.stringify(value);

/** Rewrites each Powertools JSON line in `chunk`; other lines are returned as they are. */
export function humanLogLine(chunk: string, options: HumanLogOptions = {}): string {
  return chunk
    .split('\n')
    .map((line) => {
      if (!line.startsWith('{')) return line;
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return line;
      }
      if (typeof entry.level !== 'string' || typeof entry.message !== 'string') return line;
      const level = entry.level.toUpperCase();
      const fields = Object.entries(entry)
        .filter(([key, value]) => !DROPPED.has(key) && value !== undefined && value !== null && value !== '')
        .map(([key, value]) => `${key}=${show(value)}`);
      const fn = typeof entry.function === 'string' ? `${entry.function}: ` : '';
      const tag = options.color && COLORS[level] ? `${COLORS[level]}${level}\x1b[0m` : level;
      return [`${tag} ${fn}${entry.message}`, ...fields].join(' ');
    })
    .join('\n');
}
