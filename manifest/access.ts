/**
 * What each function does with the broker's resources, read off the handlers
 * (functions/*.ts and the lib code they call). The stack turns each entry into
 * environment variables plus IAM statements through the bind helpers of
 * `BrokerFunction`, so a permission never exists without the setting that
 * uses it, and the template tests check the result statement by statement.
 */
import { tokenContext } from '../functions/core/domain/token-set.ts';
import type { FunctionName } from './functions.ts';
import { DUE_INDEX, OWNER_INDEX } from './table.ts';

export type TableAction =
  'dynamodb:GetItem' | 'dynamodb:PutItem' | 'dynamodb:UpdateItem' | 'dynamodb:DeleteItem';
export type KeyAction = 'kms:Decrypt' | 'kms:GenerateDataKey';
export type IndexName = typeof OWNER_INDEX | typeof DUE_INDEX;

export interface FunctionAccess {
  /** Item operations on the table (never Scan, never BatchWrite). */
  readonly table: readonly TableAction[];
  /** Indexes the function queries. */
  readonly queries?: readonly IndexName[];
  /** Envelope-encryption operations on the token key, always under the token encryption context. */
  readonly tokenKey?: readonly KeyAction[];
  /** Reads the CRM client secrets (token exchange, refresh, Close's revoke). */
  readonly clientSecrets?: boolean;
  /** Publishes lifecycle events to the broker's bus. */
  readonly events?: boolean;
  /** Calls a CRM's API with a connection's token (`crm-request`): no AWS permission, a port only. */
  readonly crmApi?: boolean;
  /**
   * The refresh queues (manifest/refresh-queues.ts): `send` messages to them (the dispatcher), or
   * `consume` them through the event source mappings (the workers: receive, delete, read attributes).
   */
  readonly refreshQueues?: 'send' | 'consume';
}

export const functionAccess: Readonly<Record<FunctionName, FunctionAccess>> = {
  // createConnectSession: putSession.
  'connect-session': { table: ['dynamodb:PutItem'] },
  // beginAuthorization: consumeSession (conditional delete), putState. The authorize URL needs the client id only.
  authorize: { table: ['dynamodb:DeleteItem', 'dynamodb:PutItem'] },
  // completeAuthorization: consumeState, exchangeCode (client secret), encrypt (new data key),
  // the account's connection id (GetItem, bound with a conditional PutItem), getConnection +
  // upsertConnection (conditional UpdateItem), decrypt the replaced grant to revoke it
  // (Close sends client credentials), connection.created/reconnected events.
  callback: {
    table: ['dynamodb:DeleteItem', 'dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem'],
    tokenKey: ['kms:Decrypt', 'kms:GenerateDataKey'],
    clientSecrets: true,
    events: true,
  },
  // fetchToken: getConnection, decrypt; when the token is due, refreshConnection: lease (UpdateItem),
  // refresh (client secret), re-encrypt (new data key), store (UpdateItem), needs_reauth/failed/recovered events.
  'token-fetch': {
    table: ['dynamodb:GetItem', 'dynamodb:UpdateItem'],
    tokenKey: ['kms:Decrypt', 'kms:GenerateDataKey'],
    clientSecrets: true,
    events: true,
  },
  // list (byOwner query), get, delete: take the refresh lease (UpdateItem) to wait out a refresh in progress,
  // decrypt for the revoke call (Close sends client credentials), deleteConnection, event.
  // confirm: take the pending result (DeleteItem), then as the callback: bind the account's id (GetItem,
  // PutItem), store the grant (UpdateItem, GenerateDataKey), revoke a replaced or refused grant (Decrypt).
  connections: {
    table: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
    queries: [OWNER_INDEX],
    tokenKey: ['kms:Decrypt', 'kms:GenerateDataKey'],
    clientSecrets: true,
    events: true,
  },
  // crmRequest: as token-fetch (getConnection, decrypt, a refresh under the lease when the token is due
  // or the CRM answered 401), the account's rate budget item (GetItem, conditional UpdateItem), and the
  // CRM's API.
  'crm-request': {
    table: ['dynamodb:GetItem', 'dynamodb:UpdateItem'],
    tokenKey: ['kms:Decrypt', 'kms:GenerateDataKey'],
    clientSecrets: true,
    events: true,
    crmApi: true,
  },
  // fetchToken with forceRefresh: as token-fetch.
  refresh: {
    table: ['dynamodb:GetItem', 'dynamodb:UpdateItem'],
    tokenKey: ['kms:Decrypt', 'kms:GenerateDataKey'],
    clientSecrets: true,
    events: true,
  },
  // The dispatcher: findDueConnections (byDueTime query), then a claim per due connection and per
  // expired pending result (conditional UpdateItem), then SendMessageBatch to the CRM's refresh queue.
  // It reads no token, calls no CRM and publishes nothing.
  'refresh-scheduled': {
    table: ['dynamodb:UpdateItem'],
    queries: [DUE_INDEX],
    refreshQueues: 'send',
  },
  // The workers: per message getConnection, then refreshConnection as token-fetch (lease, decrypt,
  // refresh with the client secret, re-encrypt, store, events), or give the claim back (UpdateItem);
  // for an unconfirmed connect result takePending (DeleteItem), decrypt and revoke its grant.
  'refresh-worker': {
    table: ['dynamodb:GetItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
    tokenKey: ['kms:Decrypt', 'kms:GenerateDataKey'],
    clientSecrets: true,
    events: true,
    refreshQueues: 'consume',
  },
};

/** The encryption context every token envelope carries, taken from the code that builds it. */
const sampleContext = tokenContext({ connectionId: 'c', ownerId: 'o', provider: 'close' });

/** `purpose` of every token envelope: the KMS key policy and the roles require it. */
export const TOKEN_PURPOSE: string = sampleContext.purpose;

/**
 * The encryption-context key naming an intermediate key's slot (docs/key-hierarchy.md): the
 * intermediate keys are KMS data keys under `{purpose, provider, keySlot}`, bound to their CRM and day.
 */
export const INTERMEDIATE_KEY_SLOT = 'keySlot';

/** The only encryption-context keys a token envelope may carry (its own, and its intermediate key's slot). */
export const TOKEN_CONTEXT_KEYS: readonly string[] = [
  ...Object.keys(sampleContext),
  INTERMEDIATE_KEY_SLOT,
].sort();
