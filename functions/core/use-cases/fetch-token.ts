/**
 * `token-fetch` (and the refresh route): a valid access token for a connection,
 * refreshed first when it would not stay valid for `minValiditySeconds` (never
 * asking more than half its issued lifetime), or on `forceRefresh`.
 */
import { timingSafeEqual } from 'node:crypto';
import { NeedsReauth } from '../domain/errors.ts';
import type { ProviderId } from '../domain/providers.ts';
import type { ConnectionRecord } from '../domain/records.ts';
import { type StoredTokens, tokenContext } from '../domain/token-set.ts';
import { sha256Hex } from '../domain/secrets.ts';
import type { Deps } from '../ports.ts';
import { ownedConnection } from './owned-connection.ts';
import { refreshConnection } from './refresh-connection.ts';

export interface TokenAnswer {
  connectionId: string;
  provider: ProviderId;
  accessToken: string;
  tokenType: 'Bearer';
  expiresAt: string | null;
  apiBaseUrl: string;
  headers: Record<string, string>;
}

export interface FetchRequest {
  connectionId: string;
  /** When given, the connection must be this owner's, else `ConnectionNotFound` (security.md row 21). */
  ownerId?: string | undefined;
  minValiditySeconds: number;
  forceRefresh: boolean;
  /**
   * Lowercase hex SHA-256 of an access token the CRM just answered 401 to: refresh only if it is
   * still the stored token (else the current one is returned), so many callers that saw the same
   * 401 cause one refresh between them.
   */
  rejectedTokenSha256?: string | undefined;
  /**
   * Epoch ms by which the calling function must be done. It decides whether a
   * refresh may start and how long to wait for someone else's; it never cuts a
   * refresh that was sent.
   */
  deadline?: number;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** Does the token stay valid for `minValiditySeconds`, never asking more than half its issued lifetime? */
export function staysValid(c: ConnectionRecord, minValiditySeconds: number, now: number): boolean {
  if (c.expiresAt === null) return true;
  const wantedMs = c.issuedLifetimeSeconds
    ? Math.min(minValiditySeconds * 1000, (c.issuedLifetimeSeconds * 1000) / 2)
    : minValiditySeconds * 1000;
  return c.expiresAt - now >= wantedMs;
}

export async function decryptTokens(deps: Deps, c: ConnectionRecord): Promise<StoredTokens> {
  return JSON.parse(await deps.envelope.decrypt(c.tokens, tokenContext(c))) as StoredTokens;
}

/** Is `token` the one whose SHA-256 is `sha256` (lowercase hex)? Compared in constant time. */
export function hashMatches(token: string, sha256: string): boolean {
  const stored = Buffer.from(sha256Hex(token), 'hex');
  const given = Buffer.from(sha256, 'hex');
  return given.length === stored.length && timingSafeEqual(stored, given);
}

/** The owned connection as stored once its token is good for the request, and that token. */
export async function currentToken(
  deps: Deps,
  request: FetchRequest,
): Promise<{ connection: ConnectionRecord; accessToken: string }> {
  const startedAt = deps.now();
  let connection = await ownedConnection(deps, request.connectionId, request.ownerId);
  if (connection.status === 'needs_reauth') throw new NeedsReauth();

  const refreshedSinceStart = (c: ConnectionRecord) =>
    c.lastRefreshedAt !== null && c.lastRefreshedAt >= startedAt;
  let satisfied = (c: ConnectionRecord) =>
    request.forceRefresh ? refreshedSinceStart(c) : staysValid(c, request.minValiditySeconds, deps.now());

  let tokens: StoredTokens | undefined;
  if (request.rejectedTokenSha256 !== undefined && !request.forceRefresh) {
    tokens = await decryptTokens(deps, connection);
    if (hashMatches(tokens.accessToken, request.rejectedTokenSha256)) {
      // Still the rejected token: done once the token changed (a version bump is a token write), or a
      // verification (a token that never expires) finished since this call began.
      const rejectedAt = connection.version;
      satisfied = (c) => c.version !== rejectedAt || refreshedSinceStart(c);
    }
  }

  if (!satisfied(connection)) {
    connection = await refreshConnection(deps, connection, { satisfied, deadline: request.deadline });
    tokens = undefined;
  }
  tokens ??= await decryptTokens(deps, connection);
  return { connection, accessToken: tokens.accessToken };
}

export async function fetchToken(deps: Deps, request: FetchRequest): Promise<TokenAnswer> {
  const { connection, accessToken } = await currentToken(deps, request);
  const provider = deps.config.providers[connection.provider];
  return {
    connectionId: connection.connectionId,
    provider: connection.provider,
    accessToken,
    tokenType: 'Bearer',
    expiresAt: iso(connection.expiresAt),
    apiBaseUrl: provider.apiBaseUrl,
    headers: { ...provider.apiHeaders, Authorization: `Bearer ${accessToken}` },
  };
}
