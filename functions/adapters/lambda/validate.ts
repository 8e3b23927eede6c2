/** Input validation for invoke payloads: precise `InvalidRequest` errors, nothing echoed back. */
import type { Config } from './config.ts';
import { FlowError, InvalidRequest } from '../../core/domain/errors.ts';
import { integerIn } from '../../core/domain/numbers.ts';
import { isRandomToken } from '../../core/domain/secrets.ts';
import { type ProviderId, isProviderId } from '../../core/domain/providers.ts';

export type Payload = Record<string, unknown>;

/** The payload must be a JSON object with only the `allowed` keys. */
export function objectPayload(event: unknown, allowed: readonly string[]): Payload {
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    throw new InvalidRequest('The payload must be a JSON object');
  }
  const unknown = Object.keys(event).filter((k) => !allowed.includes(k));
  if (unknown.length > 0) {
    throw new InvalidRequest(`Unknown field(s); allowed: ${allowed.join(', ')}`);
  }
  return event as Payload;
}

export const CONNECTION_ID = /^conn_[0-9a-f]{32}$/;

export function connectionId(value: unknown): string {
  if (typeof value !== 'string' || !CONNECTION_ID.test(value)) {
    throw new InvalidRequest('connectionId must look like conn_ followed by 32 hex digits');
  }
  return value;
}

/** Owner ids are the caller's own user or tenant ids: 1-256 visible ASCII characters. */
export function ownerId(value: unknown): string {
  if (typeof value !== 'string' || !/^[\x21-\x7e]{1,256}$/.test(value)) {
    throw new InvalidRequest('ownerId must be 1-256 visible ASCII characters');
  }
  return value;
}

/** A confirmation code from a pending connect's redirect: 32 random bytes, base64url. */
export function confirmation(value: unknown): string {
  if (!isRandomToken(value))
    throw new InvalidRequest('confirmation must be the code from the pending redirect');
  return value;
}

/** An optional `ownerId`: when given, the call acts only on that owner's connections. */
export const optionalOwnerId = (value: unknown): string | undefined =>
  value === undefined ? undefined : ownerId(value);

/** The `{provider}` of a browser route: a CRM this deployment offers, else the "not available" page. */
export function offeredProvider(config: Config, value: unknown): ProviderId {
  if (!isProviderId(value) || !config.clients[value]) {
    throw new FlowError('unknown_provider', 'This CRM is not available.');
  }
  return value;
}

/** The `provider` of a service payload: one this deployment offers, else `InvalidRequest`. */
export function configuredProvider(config: Config, value: unknown): ProviderId {
  if (!isProviderId(value)) throw new InvalidRequest('provider must be one of copper, capsule, close');
  if (!config.clients[value]) throw new InvalidRequest('that provider is not configured');
  return value;
}

/**
 * `returnTo` must be an absolute http(s) URL whose origin is exactly one of the
 * allowed origins (security.md row 7); returns it normalized.
 */
export function returnTo(config: Config, value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  const refuse = () => new InvalidRequest('returnTo must be a URL on an allowed origin');
  // Control characters, backslashes and whitespace have no place in a return URL (CR/LF, `/\evil.com`).
  // eslint-disable-next-line no-control-regex -- refusing control characters is the point
  if (typeof value !== 'string' || value.length > 2048 || /[\s\\\x00-\x1f\x7f]/.test(value)) throw refuse();
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw refuse();
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw refuse();
  if (url.username || url.password) throw refuse();
  if (!config.returnToOrigins.has(url.origin)) throw refuse();
  return url.toString();
}

/** An optional hex SHA-256 digest (64 hex digits, any case); returned lowercase. */
export function optionalSha256(value: unknown, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !/^[0-9a-fA-F]{64}$/.test(value)) {
    throw new InvalidRequest(`${name} must be a hex SHA-256 digest (64 hex digits)`);
  }
  return value.toLowerCase();
}

export function integer(value: unknown, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const n = integerIn(value, min, max);
  if (n === undefined) throw new InvalidRequest(`${name} must be an integer from ${min} to ${max}`);
  return n;
}

export function boolean(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new InvalidRequest(`${name} must be true or false`);
  return value;
}
