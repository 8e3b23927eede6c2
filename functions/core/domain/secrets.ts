import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** 32 random bytes as base64url (43 characters), for states, sessions, PKCE verifiers (RFC 7636 §4.1). */
export const randomToken = (bytes = 32): string => randomBytes(bytes).toString('base64url');

/** SHA-256 as lowercase hex: how states, sessions and cookies are stored. */
export const sha256Hex = (value: string): string => createHash('sha256').update(value).digest('hex');

/** PKCE S256 challenge: BASE64URL(SHA256(ASCII(verifier))) (RFC 7636 §4.2). */
export const pkceChallenge = (verifier: string): string =>
  createHash('sha256').update(verifier, 'ascii').digest('base64url');

/**
 * Constant-time comparison of two strings by their SHA-256 digests, so inputs of
 * unequal (or zero) length compare in constant time and never throw.
 */
export function safeEqual(a: string | undefined, b: string | undefined): boolean {
  if (typeof a !== 'string' || typeof b !== 'string') return false;
  const da = createHash('sha256').update(a).digest();
  const db = createHash('sha256').update(b).digest();
  return timingSafeEqual(da, db) && a.length === b.length;
}

/** A base64url token of exactly `bytes` random bytes (the shape `randomToken(bytes)` makes). */
export function isRandomToken(value: unknown, bytes = 32): value is string {
  const len = Math.ceil((bytes * 4) / 3);
  return typeof value === 'string' && value.length === len && /^[A-Za-z0-9_-]+$/.test(value);
}
