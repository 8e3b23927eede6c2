/**
 * Calls to a CRM: a timeout on every call, a cap on response size, and retries
 * only for what is transient (network errors, 5xx, 429), with capped
 * exponential backoff and jitter that honours `Retry-After` (security.md row 11).
 */
import { ProviderUnavailable } from '../../core/domain/errors.ts';
import {
  OutcomeUnknown,
  ProviderProtocolError,
  type RequestLimits,
  type RetryPolicy,
} from '../../core/domain/crm-errors.ts';

export interface ProviderResponse {
  status: number;
  headers: Headers;
  /** Parsed JSON body, or undefined when the body was not JSON. */
  json: unknown;
}

export const noRetry: RetryPolicy = { maxAttempts: 1, baseDelayMs: 0, maxDelayMs: 0 };

export interface ProviderHttpOptions {
  timeoutMs: number;
  /** Largest response body read, in bytes; a larger one is a protocol failure. */
  maxBodyBytes?: number;
  fetch?: typeof fetch;
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
  now?: () => number;
}

/** Whole seconds from a `Retry-After` header (delta-seconds or HTTP date), capped at an hour. */
export function retryAfterSeconds(headers: Headers, now: number): number | undefined {
  const raw = headers.get('retry-after');
  if (!raw) return undefined;
  const seconds = /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : (Date.parse(raw) - now) / 1000;
  return Number.isFinite(seconds) && seconds >= 0 ? Math.min(Math.ceil(seconds), 3600) : undefined;
}

export const isTransientStatus = (status: number): boolean => status === 429 || status >= 500;

const realSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Reads at most `maxBytes` of a body; past that the rest is dropped and the body reported too large. */
export async function readCappedBytes(
  response: Response,
  maxBytes: number,
): Promise<{ body: Uint8Array | null; tooLarge: boolean }> {
  const declared = Number(response.headers.get('content-length') ?? '0');
  if (declared > maxBytes) {
    await response.body?.cancel();
    return { body: null, tooLarge: true };
  }
  if (!response.body) return { body: null, tooLarge: false };
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel();
      return { body: null, tooLarge: true };
    }
    chunks.push(value);
  }
  return { body: size === 0 ? null : Buffer.concat(chunks), tooLarge: false };
}

async function readCapped(response: Response, maxBytes: number): Promise<string> {
  const { body, tooLarge } = await readCappedBytes(response, maxBytes);
  if (tooLarge) throw new ProviderProtocolError('CRM response too large');
  return body ? Buffer.from(body).toString('utf8') : '';
}

/** Network errors raised before the request could have left this machine: safe to retry for anything. */
const NOT_SENT_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
]);
export const neverSent = (err: unknown): boolean => {
  const code = (err as { cause?: { code?: unknown } } | undefined)?.cause?.code;
  return typeof code === 'string' && NOT_SENT_CODES.has(code);
};
/** Gateway answers: the CRM behind the gateway may have processed the request. */
const isGatewayStatus = (status: number): boolean => status === 502 || status === 504;

export class ProviderHttp {
  private readonly fetch: typeof fetch;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly random: () => number;
  private readonly now: () => number;
  private readonly maxBodyBytes: number;

  constructor(private readonly options: ProviderHttpOptions) {
    this.fetch = options.fetch ?? globalThis.fetch;
    this.sleep = options.sleep ?? realSleep;
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
    this.maxBodyBytes = options.maxBodyBytes ?? 256 * 1024;
  }

  /**
   * One request, retried per `policy` while the answer is transient and `limits`
   * allow. Returns the last response, whatever its status; throws
   * `ProviderUnavailable` when no usable answer came (`OutcomeUnknown` when the
   * CRM may have processed the request and no retry was allowed).
   */
  async request(
    url: string,
    init: { method: 'GET' | 'POST'; headers?: Record<string, string>; body?: string },
    policy: RetryPolicy = noRetry,
    limits: RequestLimits = {},
  ): Promise<ProviderResponse> {
    const deadline = limits.deadline ?? Number.POSITIVE_INFINITY;
    const startBy = limits.startAttemptsBy ?? Number.POSITIVE_INFINITY;
    const attemptTimeout = limits.timeoutMs ?? this.options.timeoutMs;
    const retryAmbiguous = limits.retryAmbiguous ?? true;
    let lastError: unknown;
    for (let attempt = 1; ; attempt++) {
      const timeout = Math.min(attemptTimeout, deadline - this.now());
      if (timeout <= 0 || (attempt > 1 && this.now() > startBy)) break;
      let retryAfter: number | undefined;
      let ambiguous: boolean;
      try {
        const response = await this.fetch(url, {
          method: init.method,
          headers: { Accept: 'application/json', ...init.headers },
          body: init.body,
          redirect: 'manual',
          signal: AbortSignal.timeout(timeout),
        });
        const text = await readCapped(response, this.maxBodyBytes);
        let json: unknown;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        if (!isTransientStatus(response.status))
          return { status: response.status, headers: response.headers, json };
        retryAfter = retryAfterSeconds(response.headers, this.now());
        ambiguous = isGatewayStatus(response.status);
        lastError = new ProviderUnavailable(`CRM answered ${response.status}`, retryAfter);
      } catch (err) {
        // Network error, timeout, or oversized body: transient, and ambiguous unless it never left.
        ambiguous = !neverSent(err);
        lastError = err;
      }
      if (ambiguous && !retryAmbiguous) throw new OutcomeUnknown({ cause: lastError });
      if (attempt >= policy.maxAttempts) break;
      const backoff = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
      const delay = Math.max(
        retryAfter !== undefined ? retryAfter * 1000 : 0,
        backoff * (0.5 + this.random() / 2),
      );
      if (this.now() + delay >= deadline || this.now() + delay > startBy) break;
      await this.sleep(delay);
    }
    if (lastError instanceof ProviderUnavailable) throw lastError;
    throw new ProviderUnavailable('The CRM could not be reached', undefined, { cause: lastError });
  }
}

export {
  OutcomeUnknown,
  ProviderProtocolError,
  type RequestLimits,
  type RetryPolicy,
} from '../../core/domain/crm-errors.ts';
