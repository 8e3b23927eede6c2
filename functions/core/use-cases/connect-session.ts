/** `connect-session`: a trusted backend decides whose connection a browser is about to create. */
import type { ProviderId } from '../domain/providers.ts';
import { randomToken, sha256Hex } from '../domain/secrets.ts';
import type { Deps } from '../ports.ts';

/** A single-use connect link for `ownerId`, expiring within the session TTL; only its hash is stored. */
export async function createConnectSession(
  deps: Pick<Deps, 'config' | 'store' | 'now'>,
  input: { ownerId: string; provider: ProviderId; returnTo?: string; requireConfirmation?: boolean },
): Promise<{ connectUrl: string; expiresAt: string }> {
  const session = randomToken();
  const expiresAt = deps.now() + deps.config.connectSessionTtlSeconds * 1000;
  await deps.store.putSession({ sessionHash: sha256Hex(session), expiresAt, ...input });
  const url = new URL(`${deps.config.publicBaseUrl}/connect/${input.provider}`);
  url.searchParams.set('session', session);
  return { connectUrl: url.toString(), expiresAt: new Date(expiresAt).toISOString() };
}
