/** How a connection is named. */
import { createHash, randomBytes } from 'node:crypto';
import type { ProviderId } from './providers.ts';

/**
 * A new connection id: `conn_` and 32 hex digits of randomness, so nobody can
 * compute another tenant's id from an owner id and a CRM account id.
 */
export const newConnectionId = (): string => `conn_${randomBytes(16).toString('hex')}`;

/**
 * The id connections were given before ids were random: a hash of provider,
 * owner and CRM account. Only looked up, so such connections keep their id on
 * reconnect; never given to a new connection.
 */
export function legacyConnectionIdFor(ownerId: string, provider: ProviderId, accountId: string): string {
  const digest = createHash('sha256').update(`${provider}\0${ownerId}\0${accountId}`).digest('hex');
  return `conn_${digest.slice(0, 32)}`;
}
