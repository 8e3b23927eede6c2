/** What a CRM issued and whether it still works: for tests that prove no grant is left alive. */
import type { FaultProxy } from './fault-proxy.ts';
import type { OidcCrm } from './oidc-crm.ts';

/** Does this refresh token still redeem at the CRM (asked directly, not through any proxy)? */
export async function redeems(crm: OidcCrm, refreshToken: string): Promise<boolean> {
  const res = await fetch(crm.env.CLOSE_TOKEN_URL as string, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'refresh_token',
      refresh_token: refreshToken,
      client_id: crm.env.CLOSE_CLIENT_ID as string,
      client_secret: crm.env.CLOSE_CLIENT_SECRET as string,
    }).toString(),
  });
  return res.status === 200;
}

/** Every access and refresh token the CRM issued through the proxy since its last `clear`. */
export function issued(proxy: FaultProxy): { accessTokens: string[]; refreshTokens: string[] } {
  const bodies = proxy.answers
    .filter((a) => a.path === '/oauth2/token/' && a.status === 200)
    .map((a) => a.json as { access_token: string; refresh_token?: string });
  return {
    accessTokens: bodies.map((b) => b.access_token),
    refreshTokens: bodies.flatMap((b) => (b.refresh_token ? [b.refresh_token] : [])),
  };
}
