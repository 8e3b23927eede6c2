/**
 * `/callback/{provider}`: validate the CRM's answer, consume the state,
 * exchange the code, identify the account, encrypt and store the new grant,
 * revoke the grant it replaces. Each step below owns its errors, so the flow
 * reads as that sentence.
 */
import { randomUUID } from 'node:crypto';
import { redirectUri } from '../domain/config.ts';
import { legacyConnectionIdFor, newConnectionId } from '../domain/connection-id.ts';
import { TokenEndpointRejected } from '../domain/crm-errors.ts';
import { dueSlot } from '../domain/due-slot.ts';
import { errorFields } from '../domain/error-fields.ts';
import { FlowError, ProviderUnavailable } from '../domain/errors.ts';
import type { Account, ProviderDefinition, ProviderId, TokenResponse } from '../domain/providers.ts';
import type { ConnectionRecord, StateRecord } from '../domain/records.ts';
import { isRandomToken, randomToken, safeEqual, sha256Hex } from '../domain/secrets.ts';
import { type StoredTokens, pendingTokenContext, tokenContext, tokenExpiry } from '../domain/token-set.ts';
import { PENDING_TTL_MS } from '../domain/timeline.ts';
import type { Deps } from '../ports.ts';
import { revokeGrant, revokeStoredGrant } from './revoke-grant.ts';

/** The CRM's answer on the callback, from the query string or (Copper) a form body. */
export interface CallbackParams {
  state?: string;
  code?: string;
  error?: string;
  error_description?: string;
  iss?: string;
}

export type CallbackOutcome =
  | {
      kind: 'connected';
      connection: ConnectionRecord;
      created: boolean;
      returnTo?: string;
      providerName: string;
    }
  /** Stored as pending until the app confirms who connected; `confirmation` is its one-time code. */
  | { kind: 'pending'; confirmation: string; returnTo: string; providerName: string };

const CODE_SHAPE = /^[\x21-\x7e]{1,2048}$/;
const ERROR_SHAPE = /^[\x20-\x7e]{1,128}$/;

type ConnectionIds = Pick<ConnectionRecord, 'connectionId' | 'ownerId' | 'provider'>;

export async function completeAuthorization(
  deps: Deps,
  provider: ProviderId,
  params: CallbackParams,
  cookieValue: string | undefined,
): Promise<CallbackOutcome> {
  const definition = deps.config.providers[provider];
  const answer = checkAnswer(definition, params, cookieValue);
  const state = await consumeState(deps, provider, answer.state, answer.cookieValue);
  const returnTo = state.returnTo;
  try {
    if (answer.refused) refusedAtTheCrm(answer.refused, params.error_description, returnTo);
    const token = await exchangeCode(deps, definition, answer.code as string, state);
    const account = await identifyAccount(deps, definition, token, returnTo);
    if (state.requireConfirmation && returnTo) {
      const confirmation = await storePending(deps, state, account, token);
      return { kind: 'pending', confirmation, returnTo, providerName: definition.displayName };
    }
    const { connection, created } = await connectAccount(deps, state.ownerId, provider, account, token);
    return {
      kind: 'connected',
      connection,
      created,
      providerName: definition.displayName,
      ...(returnTo ? { returnTo } : {}),
    };
  } catch (err) {
    if (err instanceof FlowError) throw err;
    // The state is spent and nothing was stored: send the person back with a generic error.
    deps.logger.error('callback failed after the state was consumed', { provider, ...errorFields(err) });
    throw new FlowError('internal_error', 'Something went wrong on our side. Please try again.', {
      returnTo,
      cause: err,
    });
  }
}

/** 1. The answer's shape, before touching storage or the CRM. */
function checkAnswer(
  definition: ProviderDefinition,
  params: CallbackParams,
  cookieValue: string | undefined,
): { state: string; cookieValue: string; code?: string; refused?: string } {
  if (!isRandomToken(params.state)) {
    throw new FlowError('invalid_state', 'The sign-in answer is missing its state or it is malformed.');
  }
  if (!isRandomToken(cookieValue)) {
    throw new FlowError('invalid_state', 'This browser did not start this connection (cookie missing).');
  }
  // RFC 9207: an `iss` must match exactly; these CRMs publish none, so any `iss` is refused.
  if (params.iss !== undefined && params.iss !== definition.issuer) {
    throw new FlowError('invalid_issuer', 'The sign-in answer came from an unexpected issuer.');
  }
  if (params.error !== undefined) {
    if (!ERROR_SHAPE.test(params.error))
      throw new FlowError('invalid_request', 'The sign-in answer is malformed.');
    return { state: params.state, cookieValue, refused: params.error };
  }
  if (params.code === undefined || !CODE_SHAPE.test(params.code)) {
    throw new FlowError('invalid_request', 'The sign-in answer has no valid authorization code.');
  }
  return { state: params.state, cookieValue, code: params.code };
}

/** 2. Consume the state: exists, unexpired, this provider, this browser (one conditional delete). */
async function consumeState(
  deps: Deps,
  provider: ProviderId,
  state: string,
  cookieValue: string,
): Promise<StateRecord> {
  const cookieHash = sha256Hex(cookieValue);
  const record = await deps.store.consumeState(sha256Hex(state), provider, cookieHash, deps.now());
  if (!record) {
    throw new FlowError(
      'invalid_state',
      'This sign-in answer has expired, was already used, or is not yours.',
    );
  }
  // Belt and braces: the delete's condition already checked these; a store adapter that ever ignored
  // conditions must still not let another browser finish this flow (constant-time compare, row 16).
  if (!safeEqual(record.cookieHash, cookieHash) || record.provider !== provider) {
    throw new FlowError('invalid_state', 'This sign-in answer is not yours.');
  }
  return record;
}

/** 3. The person declined, or the CRM failed the request: nothing to store. */
function refusedAtTheCrm(
  error: string,
  description: string | undefined,
  returnTo: string | undefined,
): never {
  if (error === 'access_denied') {
    throw new FlowError('access_denied', 'Access was declined at the CRM.', { returnTo });
  }
  const shown = description && ERROR_SHAPE.test(description) ? `: ${description}` : '.';
  throw new FlowError('authorization_failed', `The CRM could not authorize the connection${shown}`, {
    returnTo,
  });
}

/** 4. Exchange the code (same redirect_uri as at authorize; the PKCE verifier where sent). */
async function exchangeCode(
  deps: Deps,
  definition: ProviderDefinition,
  code: string,
  state: StateRecord,
): Promise<TokenResponse> {
  try {
    return await deps.oauth.exchangeCode(definition, {
      code,
      redirectUri: redirectUri(deps.config, definition.id),
      ...(state.codeVerifier ? { codeVerifier: state.codeVerifier } : {}),
    });
  } catch (err) {
    deps.logger.warn('code exchange failed', { provider: definition.id, ...errorFields(err) });
    const returnTo = state.returnTo;
    if (!(err instanceof TokenEndpointRejected)) {
      throw new FlowError('provider_unavailable', 'The CRM could not be reached. Please try again.', {
        returnTo,
        cause: err,
      });
    }
    // The broker's own credentials refused: every new connection fails until an operator fixes them.
    if (err.refusal === 'client_rejected') deps.metrics.count('ClientCredentialsRejected');
    throw new FlowError('token_exchange_failed', 'The CRM refused the sign-in. Please try again.', {
      returnTo,
      cause: err,
    });
  }
}

/** 5. The CRM account the token belongs to. */
async function identifyAccount(
  deps: Deps,
  definition: ProviderDefinition,
  token: TokenResponse,
  returnTo: string | undefined,
): Promise<Account> {
  try {
    return await deps.oauth.identify(definition, token);
  } catch (err) {
    deps.logger.warn('identity call failed', { provider: definition.id, ...errorFields(err) });
    const code = err instanceof ProviderUnavailable ? 'provider_unavailable' : 'identity_failed';
    throw new FlowError(code, 'The CRM account could not be identified. Please try again.', {
      returnTo,
      cause: err,
    });
  }
}

/**
 * Stores the account's new grant as its connection (a reconnect keeps the id),
 * revokes the grant it replaced, and announces it. Also the last step of
 * `connections confirm`.
 */
export async function connectAccount(
  deps: Deps,
  ownerId: string,
  provider: ProviderId,
  account: Account,
  token: TokenResponse,
): Promise<{ connection: ConnectionRecord; created: boolean }> {
  const ids = {
    connectionId: await connectionIdForAccount(deps, ownerId, provider, account.id),
    ownerId,
    provider,
  };
  const { connection, replaced } = await storeNewGrant(deps, ids, account, token);
  if (replaced) await revokeReplacedGrant(deps, replaced, token);
  await announce(deps, connection, replaced === undefined);
  return { connection, created: replaced === undefined };
}

/**
 * Keeps a result the app must confirm (`requireConfirmation`): its tokens
 * encrypted like a connection's, under the hash of a one-time code that goes
 * back to the app on `returnTo`; unconfirmed, it is discarded and its grant
 * revoked after `PENDING_TTL_MS`.
 */
async function storePending(
  deps: Deps,
  state: StateRecord,
  account: Account,
  token: TokenResponse,
): Promise<string> {
  const confirmation = randomToken();
  const confirmationHash = sha256Hex(confirmation);
  const tokens: StoredTokens = {
    accessToken: token.access_token,
    ...(token.refresh_token ? { refreshToken: token.refresh_token } : {}),
  };
  const ids = { confirmationHash, ownerId: state.ownerId, provider: state.provider };
  const now = deps.now();
  await deps.store.putPending({
    ...ids,
    account,
    tokens: await deps.envelope.encrypt(JSON.stringify(tokens), pendingTokenContext(ids)),
    ...(token.expires_in !== undefined ? { expiresIn: token.expires_in } : {}),
    receivedAt: now,
    expiresAt: now + PENDING_TTL_MS,
  });
  deps.logger.info('connection pending confirmation', { provider: state.provider });
  return confirmation;
}

/**
 * The connection id of this owner's CRM account: the one it is bound to (so a
 * reconnect keeps it), else a connection stored before ids were random, else a
 * new random id. Bound with a conditional write, so two callbacks at once agree.
 */
async function connectionIdForAccount(
  deps: Deps,
  ownerId: string,
  provider: ProviderId,
  accountId: string,
): Promise<string> {
  const bound = await deps.store.connectionIdForAccount(ownerId, provider, accountId);
  if (bound) return bound;
  const legacy = legacyConnectionIdFor(ownerId, provider, accountId);
  const candidate = (await deps.store.getConnection(legacy)) ? legacy : newConnectionId();
  return deps.store.bindAccount(ownerId, provider, accountId, candidate);
}

/**
 * 6. Writes the new grant's tokens, conditional on the item being as last
 * read, so a refresh of the grant being replaced cannot slip in between
 * unnoticed: on a conflict, read again and retry. Re-connecting the same
 * account for the same owner keeps the connection id. Returns what was stored
 * and the record it replaced (undefined for a new connection).
 */
async function storeNewGrant(
  deps: Deps,
  ids: ConnectionIds,
  account: Account,
  token: TokenResponse,
): Promise<{ connection: ConnectionRecord; replaced: ConnectionRecord | undefined }> {
  const grantId = randomUUID();
  const tokens: StoredTokens = {
    accessToken: token.access_token,
    ...(token.refresh_token ? { refreshToken: token.refresh_token } : {}),
  };
  const encrypted = await deps.envelope.encrypt(JSON.stringify(tokens), tokenContext(ids));
  let previous = await deps.store.getConnection(ids.connectionId);
  for (let attempt = 1; ; attempt++) {
    const now = deps.now();
    const { expiresAt, issuedLifetimeSeconds } = tokenExpiry(now, token.expires_in);
    const refreshable = Boolean(token.refresh_token);
    const written = await deps.store.upsertConnection(
      {
        ...ids,
        account,
        status: 'active',
        tokens: encrypted,
        grantId,
        expiresAt,
        issuedLifetimeSeconds,
        lastRefreshedAt: null,
        lastError: null,
        updatedAt: now,
        refreshFailures: 0,
        ...dueSlot(deps.config, { expiresAt, refreshable, now, issuedLifetimeSeconds }),
      },
      previous ? { version: previous.version } : undefined,
    );
    if (written) return { connection: written, replaced: previous };
    const current = await deps.store.getConnection(ids.connectionId);
    // An SDK retry of our own write that landed (its answer lost) fails its condition: it is ours.
    if (current?.grantId === grantId) return { connection: current, replaced: previous };
    if (attempt >= 3) throw new Error('the connection kept changing while it was being stored');
    previous = current;
  }
}

/** 7. A connection has one live grant: revoke the one a reconnect replaced, unless the CRM handed back the same tokens. */
async function revokeReplacedGrant(deps: Deps, replaced: ConnectionRecord, token: TokenResponse) {
  let old: StoredTokens;
  try {
    old = JSON.parse(await deps.envelope.decrypt(replaced.tokens, tokenContext(replaced))) as StoredTokens;
  } catch {
    return revokeStoredGrant(deps, replaced, 'reconnected');
  }
  const same =
    old.accessToken === token.access_token ||
    (old.refreshToken !== undefined && old.refreshToken === token.refresh_token);
  if (!same) await revokeGrant(deps, replaced, old, 'reconnected');
}

/** 8. Count, publish and log the new or renewed connection. */
async function announce(deps: Deps, connection: ConnectionRecord, created: boolean): Promise<void> {
  const { connectionId, ownerId, provider } = connection;
  deps.metrics.count(created ? 'ConnectionsCreated' : 'ConnectionsReconnected');
  await deps.events.publish({
    type: created ? 'connection.created' : 'connection.reconnected',
    detail: { connectionId, ownerId, provider, at: new Date(connection.updatedAt).toISOString() },
  });
  deps.logger.info(created ? 'connection created' : 'connection reconnected', { provider, connectionId });
}
