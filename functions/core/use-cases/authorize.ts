/**
 * `/connect/{provider}`: consumes the connect session, records a fresh state
 * (its hash only) bound to this browser's cookie, and says where to send the
 * browser: the CRM's authorization page (RFC 6749 section 4.1.1, PKCE where taken).
 */
import { redirectUri } from '../domain/config.ts';
import { FlowError } from '../domain/errors.ts';
import { buildAuthorizationUrl } from '../domain/oauth-protocol.ts';
import type { ProviderId } from '../domain/providers.ts';
import { isRandomToken, pkceChallenge, randomToken, sha256Hex } from '../domain/secrets.ts';
import type { Deps } from '../ports.ts';

export async function beginAuthorization(
  deps: Pick<Deps, 'config' | 'store' | 'logger' | 'now'>,
  provider: ProviderId,
  session: unknown,
  existingCookie: string | undefined,
): Promise<{ location: string; cookieValue: string }> {
  if (!isRandomToken(session)) throw new FlowError('invalid_session', 'This connect link is not valid.');
  const now = deps.now();
  const record = await deps.store.consumeSession(sha256Hex(session), provider, now);
  if (!record) throw new FlowError('invalid_session', 'This connect link has expired or was already used.');
  const definition = deps.config.providers[provider];
  const client = deps.config.clients[provider];
  if (!client) throw new FlowError('unknown_provider', 'This CRM is not available.');

  // One cookie per browser, reused across parallel flows so two tabs don't clobber each other.
  const cookieValue = isRandomToken(existingCookie) ? existingCookie : randomToken();
  const state = randomToken();
  const codeVerifier = definition.pkce ? randomToken() : undefined;
  await deps.store.putState({
    stateHash: sha256Hex(state),
    provider,
    ownerId: record.ownerId,
    ...(record.returnTo ? { returnTo: record.returnTo } : {}),
    ...(record.requireConfirmation ? { requireConfirmation: true } : {}),
    cookieHash: sha256Hex(cookieValue),
    ...(codeVerifier ? { codeVerifier } : {}),
    expiresAt: now + deps.config.stateTtlSeconds * 1000,
  });
  const location = buildAuthorizationUrl(definition, {
    clientId: client.clientId,
    redirectUri: redirectUri(deps.config, provider),
    state,
    ...(codeVerifier ? { codeChallenge: pkceChallenge(codeVerifier) } : {}),
  });
  deps.logger.info('authorization started', { provider });
  return { location, cookieValue };
}
