/**
 * The broker's settings as the use cases need them. Reading and checking them
 * from the environment is the Lambda adapter's job (adapters/lambda/config.ts).
 */
import type { ProviderDefinition, ProviderId } from './providers.ts';

export interface ClientCredentials {
  clientId: string;
  /** Present when the secret comes from the environment (local); in AWS it is read from Secrets Manager. */
  clientSecret?: string;
}

export interface Config {
  tableName: string;
  /** Where the public routes are reachable; redirect URIs are `${publicBaseUrl}/callback/{provider}`. */
  publicBaseUrl: string;
  /** Exact origins (`scheme://host[:port]`) allowed for `returnTo`. */
  returnToOrigins: ReadonlySet<string>;
  /** KMS key for envelope encryption; unset means the local master key. */
  kmsKeyId: string | undefined;
  /** Base64 32-byte local master key (local server only). */
  localMasterKey: string | undefined;
  /** Secrets Manager secret holding `{ "<provider>": "<client secret>" }` (AWS). */
  clientSecretsArn: string | undefined;
  providers: Readonly<Record<ProviderId, ProviderDefinition>>;
  /** Client credentials of the providers that are configured; a provider without them is not offered. */
  clients: Readonly<Partial<Record<ProviderId, ClientCredentials>>>;
  connectSessionTtlSeconds: number;
  stateTtlSeconds: number;
  /** Timeout of one call to a CRM. */
  providerTimeoutMs: number;
  refreshIntervalSeconds: number;
  /** How long before expiry the scheduler refreshes a token. */
  refreshLeadSeconds: number;
  /** How often a non-expiring token (Copper) is verified with the CRM's identity call. */
  healthCheckIntervalSeconds: number;
  eventBusName: string | undefined;
  /**
   * Whether a successful refresh that changes no state publishes `connection.refreshed`. Off by
   * default: at scale it is one event per refresh that tells subscribers nothing new; the local
   * server turns it on for its demo page. Failures, recoveries and re-authorizations always publish.
   */
  publishRefreshedEvents: boolean;
}

export const redirectUri = (config: Config, provider: ProviderId): string =>
  `${config.publicBaseUrl}/callback/${provider}`;

/** `scheme://host[:port]` of a URL, or undefined when it is not an absolute http(s) URL. */
export function originOf(value: string): string | undefined {
  try {
    const url = new URL(value);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.origin : undefined;
  } catch {
    return undefined;
  }
}
