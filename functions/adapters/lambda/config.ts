/**
 * Configuration, read and checked once per cold start: a bad deploy fails at
 * init, not on the thousandth request. Every setting is in README.md.
 */
import { type ClientCredentials, type Config, originOf } from '../../core/domain/config.ts';
import { ConfigError } from '../../core/domain/errors.ts';
import { integerIn } from '../../core/domain/numbers.ts';
import {
  type ProviderDefinition,
  type ProviderId,
  envPrefix,
  providerIds,
  resolveProviders,
} from '../../core/domain/providers.ts';

export type Env = Readonly<Record<string, string | undefined>>;

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = integerIn(raw.trim(), min, max, true);
  if (value === undefined) throw new ConfigError(`${name} must be an integer from ${min} to ${max}`);
  return value;
}

/** `true` or `false`; unset (or empty) keeps the fallback. */
function flag(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name]?.trim();
  if (raw === undefined || raw === '') return fallback;
  if (raw !== 'true' && raw !== 'false') throw new ConfigError(`${name} must be true or false`);
  return raw === 'true';
}

export function loadConfig(env: Env): Config {
  const port = env.PORT ?? '3000';
  const publicBaseUrl = (env.PUBLIC_BASE_URL ?? `http://localhost:${port}`).replace(/\/+$/, '');
  const publicOrigin = originOf(publicBaseUrl);
  if (!publicOrigin) throw new ConfigError('PUBLIC_BASE_URL must be an absolute http(s) URL');

  const origins = (env.RETURN_TO_ORIGINS ?? publicOrigin)
    .split(',')
    .map((o) => o.trim())
    .filter(Boolean);
  for (const origin of origins) {
    if (originOf(origin) !== origin) {
      throw new ConfigError('RETURN_TO_ORIGINS must list origins like https://app.example.com (no path)');
    }
  }

  let providers: Record<ProviderId, ProviderDefinition>;
  try {
    providers = resolveProviders(env);
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }

  const clients: Partial<Record<ProviderId, ClientCredentials>> = {};
  for (const id of providerIds) {
    const clientId = env[`${envPrefix(id)}_CLIENT_ID`];
    const clientSecret = env[`${envPrefix(id)}_CLIENT_SECRET`];
    if (clientId) clients[id] = clientSecret ? { clientId, clientSecret } : { clientId };
  }

  const kmsKeyId = env.KMS_KEY_ID || undefined;
  const localMasterKey = env.LOCAL_MASTER_KEY || undefined;
  if (!kmsKeyId && !localMasterKey)
    throw new ConfigError('KMS_KEY_ID (or, locally, LOCAL_MASTER_KEY) must be set');
  if (!kmsKeyId && localMasterKey && Buffer.from(localMasterKey, 'base64').length !== 32) {
    throw new ConfigError('LOCAL_MASTER_KEY must be 32 bytes, base64');
  }

  return {
    tableName: env.TABLE_NAME || 'crm-oauth-broker',
    publicBaseUrl,
    returnToOrigins: new Set(origins),
    kmsKeyId,
    localMasterKey,
    clientSecretsArn: env.CLIENT_SECRETS_ARN || undefined,
    providers,
    clients,
    connectSessionTtlSeconds: int(env, 'CONNECT_SESSION_TTL_SECONDS', 600, 30, 900),
    stateTtlSeconds: int(env, 'STATE_TTL_SECONDS', 600, 30, 900),
    providerTimeoutMs: int(env, 'PROVIDER_TIMEOUT_MS', 8000, 100, 60_000),
    refreshIntervalSeconds: int(env, 'REFRESH_INTERVAL_SECONDS', 60, 1, 86_400),
    refreshLeadSeconds: int(env, 'REFRESH_LEAD_SECONDS', 900, 60, 86_400),
    healthCheckIntervalSeconds: int(env, 'HEALTH_CHECK_INTERVAL_SECONDS', 86_400, 60, 30 * 86_400),
    eventBusName: env.EVENT_BUS_NAME || undefined,
    publishRefreshedEvents: flag(env, 'PUBLISH_REFRESHED_EVENTS', false),
  };
}

export { type ClientCredentials, type Config, originOf, redirectUri } from '../../core/domain/config.ts';
