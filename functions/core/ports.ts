/**
 * The ports: what the use cases need from the outside world, and nothing of how
 * it is done. Adapters (functions/adapters/*) implement them; the Lambda
 * wiring (adapters/lambda/wiring.ts) hands each function the ones it uses.
 */
import type { Config } from './domain/config.ts';
import type { CrmAnswer } from './domain/crm-call.ts';
import type { CrmMethod } from './domain/api-path.ts';
import type { RequestLimits, RetryPolicy } from './domain/crm-errors.ts';
import type { EventPublisher } from './domain/events.ts';
import type { CountMetric, DurationMetric } from './domain/metric-names.ts';
import type { Account, ProviderDefinition, ProviderId, TokenResponse } from './domain/providers.ts';
import type {
  ConnectionKey,
  ConnectionRecord,
  DispatchCursor,
  DueEntry,
  PendingRecord,
  SessionRecord,
  StateRecord,
} from './domain/records.ts';
import type { QueueMessage } from './domain/refresh-queue.ts';

export type { EventPublisher } from './domain/events.ts';

/** Connect sessions, OAuth states and connections, with every condition the use cases rely on. */
export interface ConnectionStore {
  putSession(session: SessionRecord): Promise<void>;
  /** Deletes the session if it exists, is unexpired and is for `provider`; returns it, or undefined. */
  consumeSession(sessionHash: string, provider: ProviderId, now: number): Promise<SessionRecord | undefined>;
  putState(state: StateRecord): Promise<void>;
  /** Consumes a state if it exists, is unexpired, and belongs to `provider` and the browser's cookie. */
  consumeState(
    stateHash: string,
    provider: ProviderId,
    cookieHash: string,
    now: number,
  ): Promise<StateRecord | undefined>;
  getConnection(connectionId: string): Promise<ConnectionRecord | undefined>;
  /** The connection id an owner's CRM account is bound to, if any. */
  connectionIdForAccount(
    ownerId: string,
    provider: ProviderId,
    accountId: string,
  ): Promise<string | undefined>;
  /** Binds the account to `connectionId` unless bound to another (other than `replacing`); returns the bound id. */
  bindAccount(
    ownerId: string,
    provider: ProviderId,
    accountId: string,
    connectionId: string,
    replacing?: string,
  ): Promise<string>;
  /** Unbinds the account from `connectionId`, so a reconnect after a delete gets a new id. */
  unbindAccount(
    ownerId: string,
    provider: ProviderId,
    accountId: string,
    connectionId: string,
  ): Promise<void>;
  /** Writes a new grant only if the connection is absent (`expected` undefined) or still at `expected.version`. */
  upsertConnection(
    record: Omit<ConnectionRecord, 'createdAt' | 'version' | 'leaseOwner' | 'leaseUntil'>,
    expected: { version: number } | undefined,
  ): Promise<ConnectionRecord | undefined>;
  /** Updates fields only if the version (and, when given, the lease owner) is as expected. */
  updateConnection(
    connection: ConnectionKey,
    fields: Partial<Omit<ConnectionRecord, 'connectionId' | 'provider' | 'version'>>,
    condition: { expectedVersion?: number; leaseOwner?: string; bumpVersion?: boolean },
  ): Promise<ConnectionRecord | undefined>;
  /** Takes the refresh lease unless someone else holds an unexpired one; returns the record as it is now. */
  acquireRefreshLease(
    connectionId: string,
    owner: string,
    now: number,
    leaseMs: number,
  ): Promise<ConnectionRecord | undefined>;
  releaseRefreshLease(connectionId: string, owner: string): Promise<void>;
  listConnections(ownerId: string): Promise<ConnectionRecord[]>;
  deleteConnection(connectionId: string): Promise<ConnectionRecord | undefined>;
  putPending(pending: PendingRecord): Promise<void>;
  /** Deletes and returns a pending result: if unexpired at `unexpiredAt`, or (undefined) whatever its age. */
  takePending(confirmationHash: string, unexpiredAt?: number): Promise<PendingRecord | undefined>;
  /** Confirmation hashes of pending results expired by `nowSeconds`. */
  findExpiredPending(nowSeconds: number, limit: number): Promise<string[]>;
  /** Shards of each CRM's partition of the due index (the dispatcher reads each one). */
  readonly dueShards: number;
  /**
   * A CRM partition's due index entries due after `sinceSeconds` and by `nowSeconds`, in due order,
   * at most `limit`; with `after`, only those past that entry (the next page of the same reading).
   */
  findDueAfter(
    provider: ProviderId,
    shard: number,
    sinceSeconds: number | undefined,
    nowSeconds: number,
    after: DueEntry | undefined,
    limit: number,
  ): Promise<{ entries: DueEntry[]; itemsRead: number; more: boolean }>;
  /** A CRM partition's entries still due at `beforeSeconds` (long overdue: their messages were lost). */
  findOverdue(provider: ProviderId, shard: number, beforeSeconds: number, limit: number): Promise<DueEntry[]>;
  /** Takes a partition's dispatch cursor for `runId` until `untilMs` unless another run holds it. */
  takeDispatchCursor(
    provider: ProviderId,
    shard: number,
    runId: string,
    nowMs: number,
    untilMs: number,
  ): Promise<{ held: true; cursor: DispatchCursor | undefined } | { held: false }>;
  /** Saves where the run got to (and, with `release`, lets the partition go); false if no longer held. */
  moveDispatchCursor(
    provider: ProviderId,
    shard: number,
    runId: string,
    cursor: DispatchCursor | undefined,
    release: boolean,
  ): Promise<boolean>;
  /** Moves a connection's due time from `fromSeconds` to `toSeconds` if it is still that; true if it moved. */
  moveDueTime(connection: ConnectionKey, fromSeconds: number, toSeconds: number): Promise<boolean>;
  /** Ids due at `nowSeconds` in the legacy (not per-CRM) partitions of the due index, at most `limit`. */
  findLegacyDue(
    nowSeconds: number,
    limit: number,
  ): Promise<{ ids: string[]; itemsRead: number; more: boolean }>;
  /**
   * Claims a connection of a legacy partition: moves its due time to `untilSeconds` only if it is
   * still due at `nowSeconds` (or already claimed by this `runId`: a retry), so nobody hands it out
   * again meanwhile. The claimed record, or undefined.
   */
  claimDueConnection(
    connectionId: string,
    nowSeconds: number,
    untilSeconds: number,
    runId: string,
  ): Promise<ConnectionRecord | undefined>;
  /** The same for an expired pending result; its provider, or undefined when not due (any more). */
  claimExpiredPending(
    confirmationHash: string,
    nowSeconds: number,
    untilSeconds: number,
    runId: string,
  ): Promise<ProviderId | undefined>;
}

/** The refresh queues, one per CRM: the dispatcher sends to them, the workers are driven by them. */
export interface RefreshQueue {
  /** Hands each message to its CRM's queue; answers how many could not be sent (they wait out their claim). */
  send(messages: readonly QueueMessage[]): Promise<{ failed: number }>;
}

/** Names what a ciphertext belongs to; bound into it, never secret. */
export type EncryptionContext = Readonly<Record<string, string>>;

/** Envelope encryption of token material. */
export interface TokenCipher {
  encrypt(plaintext: string, context: EncryptionContext): Promise<string>;
  decrypt(ciphertext: string, context: EncryptionContext): Promise<string>;
}

/** The CRMs' OAuth endpoints and identity calls. */
export interface CrmClient {
  exchangeCode(
    provider: ProviderDefinition,
    request: { code: string; redirectUri: string; codeVerifier?: string },
  ): Promise<TokenResponse>;
  refresh(
    provider: ProviderDefinition,
    refreshToken: string,
    policy: RetryPolicy,
    limits: RequestLimits,
  ): Promise<TokenResponse>;
  /** Reads what a refresh needs before it is sent (the client secret). */
  prepare(provider: ProviderDefinition): Promise<void>;
  revoke(provider: ProviderDefinition, token: string): Promise<'revoked' | 'unsupported' | 'failed'>;
  identify(provider: ProviderDefinition, token: TokenResponse): Promise<Account>;
  verifyAccessToken(provider: ProviderDefinition, accessToken: string): Promise<boolean>;
}

/**
 * Calls to a CRM's API on a caller's behalf (`crm-request`): one request, no
 * redirect followed, no retry. Answers whatever the status; throws
 * `CrmUnreachable` (crm-call.ts) when no answer came.
 */
export interface CrmApi {
  send(request: {
    url: URL;
    method: CrmMethod;
    headers: Record<string, string>;
    body?: string;
    timeoutMs: number;
    /** Bodies larger than this are not read (`tooLarge`). */
    maxBodyBytes: number;
  }): Promise<CrmAnswer>;
}

/** Structured logs: ids and codes only, never a token, code, state, cookie or secret. */
export interface Log {
  info(message: string, ...attributes: Record<string, unknown>[]): void;
  warn(message: string, ...attributes: Record<string, unknown>[]): void;
  error(message: string, ...attributes: Record<string, unknown>[]): void;
}

export interface Metrics {
  count(name: CountMetric, value?: number): void;
  milliseconds(name: DurationMetric, value: number): void;
}

/** What the table keeps of one CRM account's shared rate budget (arithmetic: domain/rate-limits.ts). */
export interface RateBudgetState {
  /** GCRA theoretical arrival time (epoch ms); absent before the account's first request. */
  tat?: number;
  /** The limit the CRM's headers reported, and when that was learned (epoch ms). */
  limit?: number;
  limitLearnedAt?: number;
  /** Epoch ms before which the CRM said no request may start (a 429, a spent window). */
  blockedUntil?: number;
}

/** One slot taken from a budget: the two cases of `tat = max(tat, now) + interval`, each one conditional write. */
export type RateBudgetTake =
  /** Nobody is queued (no `tat`, or `tat <= now`): `tat` becomes `tat`. */
  | { kind: 'idle'; now: number; tat: number }
  /** Requests are queued (`now < tat <= latestTat`): `tat` grows by `intervalMs`. */
  | { kind: 'queued'; now: number; latestTat: number; intervalMs: number };

/** What a CRM answer changes in a budget (each field only when given). */
export interface RateBudgetRestriction {
  now: number;
  tatAtLeast?: number;
  blockedUntil?: number;
  limit?: number;
  limitLearnedAt?: number;
}

/**
 * The rate budget of each CRM account, shared by every caller of that account
 * in any container: one small item per budget, never one per call.
 */
export interface RateBudgetStore {
  /** The budget as this process last read or wrote it, with no store call (to pick which take to try). */
  cached(budgetId: string): RateBudgetState | undefined;
  /** One conditional write: `taken` with the state after it, or not taken with the state as found. */
  take(budgetId: string, take: RateBudgetTake): Promise<{ taken: boolean; state: RateBudgetState }>;
  /** The budget as stored now (a consistent read): for a caller that waited, to see a block set meanwhile. */
  read(budgetId: string): Promise<RateBudgetState>;
  /**
   * Raises `tat` to at least `tatAtLeast` and `blockedUntil` to at least `blockedUntil` (never
   * lowers either) and/or records a learned limit.
   */
  restrict(budgetId: string, change: RateBudgetRestriction): Promise<void>;
}

/** Everything a use case may use. */
export interface Deps {
  config: Config;
  store: ConnectionStore;
  envelope: TokenCipher;
  oauth: CrmClient;
  crmApi: CrmApi;
  events: EventPublisher;
  logger: Log;
  metrics: Metrics;
  rateBudgets: RateBudgetStore;
  refreshQueue: RefreshQueue;
  now: () => number;
  sleep: (ms: number) => Promise<void>;
}
