/**
 * The token set a connection stores: what is encrypted, under which context,
 * and how a token response's lifetime becomes an expiry. No I/O here, so infra
 * and the store can read it without pulling in the rest of the broker.
 */
import type { ProviderId } from './providers.ts';
import type { ConnectionRecord } from './records.ts';

/** Encryption context (and GCM associated data) of a connection's tokens; nothing secret in it. */
export const tokenContext = (c: Pick<ConnectionRecord, 'connectionId' | 'ownerId' | 'provider'>) => ({
  purpose: 'crm-oauth-broker/tokens',
  connectionId: c.connectionId,
  ownerId: c.ownerId,
  provider: c.provider,
});

/** Encryption context of a pending result's tokens: the same shape, a connection id no connection has. */
export const pendingTokenContext = (p: { confirmationHash: string; ownerId: string; provider: ProviderId }) =>
  tokenContext({
    connectionId: `pending_${p.confirmationHash.slice(0, 32)}`,
    ownerId: p.ownerId,
    provider: p.provider,
  });

/** What is encrypted: the token set, never stored anywhere in plaintext. */
export interface StoredTokens {
  accessToken: string;
  refreshToken?: string;
}

/**
 * The shortest lifetime the broker plans with. A CRM answering `expires_in: 1`
 * (a bug, or a bad proxy) would otherwise make every fetch refresh again.
 */
export const MIN_LIFETIME_SECONDS = 60;

/** Expiry and issued lifetime of a fresh token, from `expires_in` (absent: the token never expires). */
export function tokenExpiry(
  now: number,
  expiresIn: number | undefined,
): { expiresAt: number | null; issuedLifetimeSeconds: number | null } {
  if (expiresIn === undefined) return { expiresAt: null, issuedLifetimeSeconds: null };
  const lifetime = Math.max(expiresIn, MIN_LIFETIME_SECONDS);
  return { expiresAt: now + lifetime * 1000, issuedLifetimeSeconds: lifetime };
}
