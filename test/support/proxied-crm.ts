/**
 * oidc-provider playing Close (rotating refresh tokens, grant revoked on reuse)
 * with its token and revoke endpoints behind a forwarding fault proxy, and a
 * test broker that uses them: the setup of every test that checks which grants
 * the CRM issued and which still live.
 */
import type { LocalServerOptions } from '../../local/server.ts';
import { type FaultProxy, startFaultProxy } from './fault-proxy.ts';
import { type TestBroker, startTestBroker } from './local-broker.ts';
import { type OidcCrm, startOidcCrm } from './oidc-crm.ts';

export interface ProxiedCrm {
  crm: OidcCrm;
  proxy: FaultProxy;
  broker: TestBroker;
  close(): Promise<void>;
}

export async function startProxiedCrm(options: LocalServerOptions = {}): Promise<ProxiedCrm> {
  const crm = await startOidcCrm({ redirectUris: ['http://localhost:1/not-yet'] });
  const proxy = await startFaultProxy(crm.issuer);
  const broker = await startTestBroker({
    ...options,
    env: {
      ...crm.env,
      CLOSE_TOKEN_URL: `${proxy.url}/oauth2/token/`,
      CLOSE_REVOKE_URL: `${proxy.url}/oauth2/revoke/`,
      ...options.env,
    },
  });
  // The broker's redirect URI names its port: register it once the broker is listening.
  await crm.setRedirectUris([`${broker.server.deps.config.publicBaseUrl}/callback/close`]);
  return {
    crm,
    proxy,
    broker,
    close: async () => {
      await broker.close();
      await proxy.close();
      await crm.close();
    },
  };
}
