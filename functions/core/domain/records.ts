/**
 * What the broker keeps, as the use cases see it. How it is stored (keys,
 * indexes, attribute formats) is the store adapter's business.
 */
import type { Account, ProviderId } from './providers.ts';

/** A connect session, created by `connect-session`, consumed once by `/connect`. */
export interface SessionRecord {
  sessionHash: string;
  ownerId: string;
  provider: ProviderId;
  returnTo?: string;
  /** The callback stores the result as pending until the app confirms who connected. */
  requireConfirmation?: boolean;
  /** Epoch ms. */
  expiresAt: number;
}

/** One authorization attempt: the `state` (stored only as its hash) and what the callback needs. */
export interface StateRecord {
  stateHash: string;
  provider: ProviderId;
  ownerId: string;
  returnTo?: string;
  requireConfirmation?: boolean;
  /** SHA-256 of the browser-binding cookie value. */
  cookieHash: string;
  /**
   * PKCE verifier (RFC 7636), kept server side for the few minutes of the flow.
   * Useless without the authorization code, which never touches storage.
   */
  codeVerifier?: string;
  expiresAt: number;
}

export type ConnectionStatus = 'active' | 'needs_reauth';

export interface ConnectionRecord {
  connectionId: string;
  ownerId: string;
  provider: ProviderId;
  account: Account;
  status: ConnectionStatus;
  /** Envelope-encrypted token set (see envelope.ts). */
  tokens: string;
  /** Epoch ms the access token expires, or null when it never does (Copper). */
  expiresAt: number | null;
  /** `expires_in` of the last token response: the token's issued lifetime. */
  issuedLifetimeSeconds: number | null;
  lastRefreshedAt: number | null;
  lastError: string | null;
  createdAt: number;
  updatedAt: number;
  /** Incremented by every token write; a refresh writes only if it is unchanged. */
  version: number;
  /**
   * Random id of the authorization (grant) the tokens belong to: set by each connect, kept by
   * refreshes. A refresh result for another grant than the stored one was superseded by a
   * reconnect. Absent on items stored before it existed.
   */
  grantId?: string;
  /** Refresh lease: who holds it and until when (epoch ms). */
  leaseOwner?: string;
  leaseUntil?: number;
  /** Consecutive transient refresh failures, for backing off between scheduler runs. */
  refreshFailures: number;
  /** Epoch seconds when the scheduler should next visit; absent when it never should (off the schedule). */
  dueAt?: number;
}

/** What names a connection's item and its place in the due index. */
export type ConnectionKey = Pick<ConnectionRecord, 'connectionId' | 'provider'>;

/** An entry of the due index: which connection, due when (epoch s). */
export interface DueEntry {
  connectionId: string;
  dueAt: number;
}

/**
 * Where the dispatcher got to in one partition of the due index: every entry
 * due through `through` (epoch s) was handed out, and of the second after it
 * every entry up to `after`, when a run stopped within that second.
 */
export interface DispatchCursor {
  through: number;
  after?: DueEntry;
}

/**
 * A finished connect flow waiting for the app to confirm who connected
 * (`connections confirm`): stored under the hash of its one-time code, its
 * tokens encrypted like a connection's, never readable by `token-fetch`.
 */
export interface PendingRecord {
  confirmationHash: string;
  ownerId: string;
  provider: ProviderId;
  account: Account;
  /** Envelope-encrypted token set, under `pendingTokenContext`. */
  tokens: string;
  /** `expires_in` of the token response and when it was received (epoch ms), if the token expires. */
  expiresIn?: number;
  receivedAt: number;
  /** Epoch ms after which the result is discarded and its grant revoked. */
  expiresAt: number;
}
