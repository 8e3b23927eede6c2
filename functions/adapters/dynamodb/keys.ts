/**
 * Key formats of the table's items (see manifest/table.ts for the table). Only
 * the store adapter, and tests that write items directly, use them.
 */
import { createHash } from 'node:crypto';
import { DUE_SHARDS } from '../../../manifest/table.ts';
import type { ProviderId } from '../../core/domain/providers.ts';

export const keys = {
  session: (sessionHash: string) => ({ pk: `SESSION#${sessionHash}`, sk: 'SESSION' }),
  state: (stateHash: string) => ({ pk: `STATE#${stateHash}`, sk: 'STATE' }),
  connection: (connectionId: string) => ({ pk: `CONN#${connectionId}`, sk: 'CONN' }),
  /** Which connection an owner's CRM account has: hashed, so the key carries no owner or account id. */
  account: (ownerId: string, provider: string, accountId: string) => ({
    pk: `ACCOUNT#${createHash('sha256').update(`${provider}\0${ownerId}\0${accountId}`).digest('hex')}`,
    sk: 'ACCOUNT',
  }),
  ownerPk: (ownerId: string) => `OWNER#${ownerId}`,
  /** A CRM's partition of the due index: the dispatcher knows every entry's queue without reading the item. */
  duePk: (provider: ProviderId, shard: number) => `DUE#${provider}#${shard}`,
  /**
   * The due index's partitions before they were per CRM (`DUE#<shard>`). Items still there move to
   * their CRM's partition with their next due-time write; the dispatcher claims them as it always did.
   */
  legacyDuePk: (shard: number) => `DUE#${shard}`,
  /** Where the dispatcher has got to in one partition of the due index, and which run holds it. */
  dispatchCursor: (provider: ProviderId, shard: number) => ({
    pk: `DISPATCH#${provider}#${shard}`,
    sk: 'DISPATCH',
  }),
  pending: (confirmationHash: string) => ({ pk: `PENDING#${confirmationHash}`, sk: 'PENDING' }),
  /** A CRM account's shared rate budget: hashed, so the key carries no account id. */
  rateBudget: (budgetId: string) => ({
    pk: `RATE#${createHash('sha256').update(budgetId).digest('hex')}`,
    sk: 'RATE',
  }),
  /** The due index's partition of pending results, by their expiry: the sweeper reads only expired ones. */
  pendingDuePk: 'DUE#pending',
  confirmationHashOf: (pk: string | undefined): string | undefined =>
    pk?.startsWith('PENDING#') ? pk.slice('PENDING#'.length) : undefined,
  connectionPrefix: 'CONN#',
  /** The connection id of a connection item's `pk`, or undefined for any other item. */
  connectionIdOf: (pk: string | undefined): string | undefined =>
    pk?.startsWith('CONN#') ? pk.slice('CONN#'.length) : undefined,
};

/** The due index's shard of a connection: spread by a hash of its id, so no partition runs hot. */
export const shardOf = (connectionId: string): number =>
  (createHash('sha256').update(connectionId).digest()[0] as number) % DUE_SHARDS;

/** The due index's partition key of a connection. */
export const duePkOf = (connectionId: string, provider: ProviderId): string =>
  keys.duePk(provider, shardOf(connectionId));
