/**
 * CRM client credentials. Client ids come from the environment; client
 * secrets from the environment locally, or from one Secrets Manager secret
 * (`{ "copper": "...", "capsule": "...", "close": "..." }`) in AWS, read with
 * Powertools Parameters and cached for `CLIENT_SECRETS_MAX_AGE_SECONDS`, so a
 * secret rotated in Secrets Manager reaches warm functions within minutes. A
 * CRM refusing a secret (`invalid_client`) calls `forget()`: the next read
 * bypasses the cache, so a secret an operator just fixed is used at once.
 */
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { GetParameterError } from '@aws-lambda-powertools/parameters/errors';
import { SecretsProvider } from '@aws-lambda-powertools/parameters/secrets';
import type { Config } from '../lambda/config.ts';
import { awsClientOptions } from '../aws-clients.ts';
import { ConfigError } from '../../core/domain/errors.ts';
import type { ClientSecrets } from '../crm/oauth-client.ts';
import type { ProviderDefinition, ProviderId } from '../../core/domain/providers.ts';

/** How long a warm function serves the secret it read before reading it again. */
export const CLIENT_SECRETS_MAX_AGE_SECONDS = 5 * 60;

type Secrets = Partial<Record<ProviderId, string>>;

export class ConfiguredClientSecrets implements ClientSecrets {
  private provider?: SecretsProvider;
  /** The read in flight, shared by concurrent callers (a cold scheduled refresh asks for many at once). */
  private reading?: Promise<Secrets>;
  /** Set by `forget()` (and by a forced read that failed): the next read skips the cache. */
  private bypassCache = false;

  constructor(
    private readonly config: Config,
    /** The Secrets Manager client, built with the broker's timeouts and retries on first use. */
    private readonly secretsManager: () => SecretsManagerClient = () =>
      new SecretsManagerClient(awsClientOptions()),
    private readonly maxAgeSeconds = CLIENT_SECRETS_MAX_AGE_SECONDS,
  ) {}

  clientId(provider: ProviderDefinition): string {
    const client = this.config.clients[provider.id];
    if (!client) throw new ConfigError(`${provider.id} has no client id configured`);
    return client.clientId;
  }

  async clientSecret(provider: ProviderDefinition): Promise<string> {
    const client = this.config.clients[provider.id];
    if (client?.clientSecret) return client.clientSecret;
    if (!this.config.clientSecretsArn)
      throw new ConfigError(`${provider.id} has no client secret configured`);
    const secret = (await this.read(this.config.clientSecretsArn))[provider.id];
    if (!secret) throw new ConfigError(`the client secrets secret has no entry for ${provider.id}`);
    return secret;
  }

  forget(): void {
    this.bypassCache = true;
    this.reading = undefined;
  }

  private read(arn: string): Promise<Secrets> {
    if (this.reading) return this.reading;
    const forceFetch = this.bypassCache;
    this.bypassCache = false;
    const reading = this.fetch(arn, forceFetch)
      .catch((err: unknown) => {
        // Nothing failed is cached; after a failed forced read the cache still holds the refused secret.
        if (forceFetch) this.bypassCache = true;
        throw err;
      })
      .finally(() => {
        if (this.reading === reading) this.reading = undefined;
      });
    this.reading = reading;
    return reading;
  }

  private async fetch(arn: string, forceFetch: boolean): Promise<Secrets> {
    this.provider ??= new SecretsProvider({ awsSdkV3Client: this.secretsManager() });
    let raw: unknown;
    try {
      raw = await this.provider.get(arn, { maxAge: this.maxAgeSeconds, forceFetch });
    } catch (err) {
      // Parameters wraps the SDK's error; the SDK's own (with `$metadata`) is what marks a failing dependency.
      throw err instanceof GetParameterError && err.cause !== undefined ? err.cause : err;
    }
    // Parsed here rather than with `transform: 'json'`, whose error would quote the secret's text.
    let parsed: unknown;
    try {
      parsed = JSON.parse(typeof raw === 'string' ? raw : '{}');
    } catch {
      parsed = undefined;
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      // Cached as read: read it again next time rather than failing until it expires.
      this.bypassCache = true;
      throw new ConfigError('the client secrets secret is not a JSON object');
    }
    return parsed as Secrets;
  }
}
