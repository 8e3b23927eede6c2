/**
 * CRM client credentials. Client ids come from the environment; client
 * secrets from the environment locally, or from one Secrets Manager secret
 * (`{ "copper": "...", "capsule": "...", "close": "..." }`) in AWS, read once
 * per cold start and cached until a CRM refuses them (`invalid_client`), so a
 * secret an operator fixed is picked up by warm functions too.
 */
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { Config } from '../lambda/config.ts';
import { awsClientOptions } from '../aws-clients.ts';
import { ConfigError } from '../../core/domain/errors.ts';
import type { ClientSecrets } from '../crm/oauth-client.ts';
import type { ProviderDefinition, ProviderId } from '../../core/domain/providers.ts';

export class ConfiguredClientSecrets implements ClientSecrets {
  private fromSecretsManager?: Promise<Partial<Record<ProviderId, string>>>;

  constructor(
    private readonly config: Config,
    private readonly secretsManager: () => SecretsManagerClient = () =>
      new SecretsManagerClient(awsClientOptions()),
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
    this.fromSecretsManager ??= this.load(this.config.clientSecretsArn).catch((err) => {
      this.fromSecretsManager = undefined;
      throw err;
    });
    const secret = (await this.fromSecretsManager)[provider.id];
    if (!secret) throw new ConfigError(`the client secrets secret has no entry for ${provider.id}`);
    return secret;
  }

  forget(): void {
    this.fromSecretsManager = undefined;
  }

  private async load(arn: string): Promise<Partial<Record<ProviderId, string>>> {
    const out = await this.secretsManager().send(new GetSecretValueCommand({ SecretId: arn }));
    try {
      return JSON.parse(out.SecretString ?? '{}') as Partial<Record<ProviderId, string>>;
    } catch {
      throw new ConfigError('the client secrets secret is not a JSON object');
    }
  }
}
