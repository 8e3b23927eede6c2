/** How a connection is named. */
import { createHash } from 'node:crypto';
import type { ProviderId } from './providers.ts';

/** The same owner, CRM and CRM account always map to the same connection id. */
export function connectionIdFor(ownerId: string, provider: ProviderId, accountId: string): string {
  const digest = createHash('sha256').update(`${provider}\0${ownerId}\0${accountId}`).digest('hex');
  return `conn_${digest.slice(0, 32)}`;
}
