/** What callers see of a connection: the contract's `<connection>`, never a token. */
import type { ConnectionRecord } from './records.ts';

const iso = (ms: number | null | undefined) =>
  ms === null || ms === undefined ? null : new Date(ms).toISOString();

/** The contract's `<connection>`: everything but the tokens. */
export const publicView = (c: ConnectionRecord) => ({
  connectionId: c.connectionId,
  ownerId: c.ownerId,
  provider: c.provider,
  account: { id: c.account.id, name: c.account.name ?? null, userEmail: c.account.userEmail ?? null },
  status: c.status,
  expiresAt: iso(c.expiresAt),
  lastRefreshedAt: iso(c.lastRefreshedAt),
  lastError: c.lastError ?? null,
  createdAt: iso(c.createdAt) as string,
  updatedAt: iso(c.updatedAt) as string,
});
