/**
 * What must outlive any deployment of the code: the table, the key that
 * encrypts its tokens, the CRM client secrets and the event bus other services
 * subscribe to, and, when switched on, the access trail of token-fetch with its
 * bucket. Everything that holds data here is retained when the stack is
 * deleted, and the stateless stack can be destroyed and redeployed without
 * touching it.
 */
import { Aws, CfnOutput, Duration, RemovalPolicy, Stack, type StackProps, Validations } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type { Construct } from 'constructs';
import { type FunctionName, providerIds } from '../manifest/functions.ts';
import { TTL_ATTRIBUTE, tableDefinition } from '../manifest/table.ts';
import { TOKEN_CONTEXT_KEYS, TOKEN_PURPOSE } from '../manifest/access.ts';
import { FunctionAccessTrail } from './access-trail.ts';
import type { BrokerSettings, TableCapacity } from './settings.ts';

export interface StatefulStackProps extends StackProps {
  readonly settings: BrokerSettings;
}

/** IAM path of every broker function role: the key policy admits only roles under it. */
export const rolePathFor = (prefix: string): string => `/${prefix}/`;

/** Physical name of a broker function: the stateless stack names them so, the access trail finds token-fetch by it. */
export const functionNameFor = (prefix: string, name: FunctionName): string => `${prefix}-${name}`;

/** Key administration without the power to use the key: no Encrypt, Decrypt, GenerateDataKey or CreateGrant. */
const KEY_ADMIN_ACTIONS = [
  'kms:DescribeKey',
  'kms:GetKeyPolicy',
  'kms:GetKeyRotationStatus',
  'kms:ListResourceTags',
  'kms:ListGrants',
  'kms:ListKeyPolicies',
  'kms:ListKeyRotations',
  'kms:PutKeyPolicy',
  'kms:UpdateKeyDescription',
  'kms:EnableKey',
  'kms:DisableKey',
  'kms:EnableKeyRotation',
  'kms:DisableKeyRotation',
  'kms:RotateKeyOnDemand',
  'kms:TagResource',
  'kms:UntagResource',
  'kms:CreateAlias',
  'kms:UpdateAlias',
  'kms:DeleteAlias',
  'kms:RevokeGrant',
  'kms:ScheduleKeyDeletion',
  'kms:CancelKeyDeletion',
];

export class StatefulStack extends Stack {
  readonly table: dynamodb.Table;
  readonly tokenKey: kms.Key;
  readonly clientSecrets: secretsmanager.Secret;
  readonly eventBus: events.EventBus;
  /** Who invoked token-fetch, when `tokenFetchAccessTrail` is on. */
  readonly tokenFetchAccessTrail: FunctionAccessTrail | undefined;

  constructor(scope: Construct, id: string, props: StatefulStackProps) {
    super(scope, id, props);
    const { prefix } = props.settings;
    const account = new iam.AccountRootPrincipal();

    this.tokenKey = new kms.Key(this, 'TokenKey', {
      description: `${prefix}: envelope key for CRM tokens and table encryption`,
      alias: `alias/${prefix}/tokens`,
      enableKeyRotation: true,
      rotationPeriod: Duration.days(365),
      pendingWindow: Duration.days(30),
      removalPolicy: RemovalPolicy.RETAIN,
      // The whole key policy: nothing else is merged in.
      policy: new iam.PolicyDocument({
        statements: [
          new iam.PolicyStatement({
            sid: 'KeyAdministrationWithoutUse',
            principals: [account],
            actions: KEY_ADMIN_ACTIONS,
            resources: ['*'],
          }),
          new iam.PolicyStatement({
            // Token envelopes: only broker function roles (IAM path), only with the
            // token context; the role's own policy must allow it too.
            sid: 'BrokerRolesTokenEnvelopes',
            principals: [account],
            actions: ['kms:Decrypt', 'kms:GenerateDataKey'],
            resources: ['*'],
            conditions: {
              ArnLike: {
                'aws:PrincipalArn': `arn:${Aws.PARTITION}:iam::${Aws.ACCOUNT_ID}:role${rolePathFor(prefix)}*`,
              },
              StringEquals: {
                'kms:CallerAccount': Aws.ACCOUNT_ID,
                'kms:EncryptionContext:purpose': TOKEN_PURPOSE,
              },
              'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': [...TOKEN_CONTEXT_KEYS] },
            },
          }),
          new iam.PolicyStatement({
            // Table encryption at rest: DynamoDB uses the key on behalf of callers
            // that IAM already allows on the table, and only through DynamoDB.
            sid: 'TableEncryptionThroughDynamoDB',
            principals: [account],
            actions: [
              'kms:Encrypt',
              'kms:Decrypt',
              'kms:ReEncrypt*',
              'kms:GenerateDataKey*',
              'kms:CreateGrant',
              'kms:DescribeKey',
            ],
            resources: ['*'],
            conditions: {
              StringEquals: {
                'kms:CallerAccount': Aws.ACCOUNT_ID,
                'kms:ViaService': `dynamodb.${Aws.REGION}.amazonaws.com`,
              },
            },
          }),
          new iam.PolicyStatement({
            sid: 'DynamoDBDescribesKey',
            principals: [new iam.ServicePrincipal('dynamodb.amazonaws.com')],
            actions: ['kms:DescribeKey', 'kms:GetKeyPolicy', 'kms:ListGrants'],
            resources: ['*'],
          }),
        ],
      }),
    });

    // The same table description the store code and the local store use.
    const definition = tableDefinition('unused');
    const attributeType = (name: string): dynamodb.AttributeType => {
      const type = definition.AttributeDefinitions?.find((a) => a.AttributeName === name)?.AttributeType;
      if (type === 'S') return dynamodb.AttributeType.STRING;
      if (type === 'N') return dynamodb.AttributeType.NUMBER;
      if (type === 'B') return dynamodb.AttributeType.BINARY;
      throw new Error(`table.ts declares no type for ${name}`);
    };
    const keyOf = (schema: typeof definition.KeySchema, type: 'HASH' | 'RANGE') => {
      const name = schema?.find((k) => k.KeyType === type)?.AttributeName;
      return name === undefined ? undefined : { name, type: attributeType(name) };
    };
    const partitionKey = keyOf(definition.KeySchema, 'HASH');
    if (!partitionKey) throw new Error('table.ts declares no partition key');
    const sortKey = keyOf(definition.KeySchema, 'RANGE');

    // Only the billing changes between the two modes: the same keys, indexes and logical id, so
    // switching is an in-place update of the table, never a replacement (AWS limits how often a table
    // may switch back to on demand: docs/deploy.md).
    const capacity = props.settings.tableCapacity;
    const provisioned = capacity.mode === 'provisioned' ? capacity : undefined;
    // What the table and each index start with when switched; auto scaling takes over from there.
    // CloudFormation writes it again only when it changes, so a new minimum resets the capacity once.
    const initialCapacity = provisioned
      ? { readCapacity: provisioned.reads.min, writeCapacity: provisioned.writes.min }
      : {};
    this.table = new dynamodb.Table(this, 'Table', {
      partitionKey,
      ...(sortKey ? { sortKey } : {}),
      billingMode: provisioned ? dynamodb.BillingMode.PROVISIONED : dynamodb.BillingMode.PAY_PER_REQUEST,
      ...initialCapacity,
      encryption: dynamodb.TableEncryption.CUSTOMER_MANAGED,
      encryptionKey: this.tokenKey,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      timeToLiveAttribute: TTL_ATTRIBUTE,
      deletionProtection: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    for (const index of definition.GlobalSecondaryIndexes ?? []) {
      const indexPartitionKey = keyOf(index.KeySchema, 'HASH');
      if (!index.IndexName || !indexPartitionKey) throw new Error('table.ts declares an index without keys');
      const indexSortKey = keyOf(index.KeySchema, 'RANGE');
      const projection = index.Projection?.ProjectionType;
      this.table.addGlobalSecondaryIndex({
        indexName: index.IndexName,
        partitionKey: indexPartitionKey,
        ...(indexSortKey ? { sortKey: indexSortKey } : {}),
        projectionType:
          projection === 'KEYS_ONLY'
            ? dynamodb.ProjectionType.KEYS_ONLY
            : projection === 'INCLUDE'
              ? dynamodb.ProjectionType.INCLUDE
              : dynamodb.ProjectionType.ALL,
        ...(projection === 'INCLUDE' ? { nonKeyAttributes: index.Projection?.NonKeyAttributes ?? [] } : {}),
        ...initialCapacity,
      });
    }
    if (provisioned) this.autoScale(provisioned, definition.GlobalSecondaryIndexes ?? []);

    // One secret `{ "copper": "...", "capsule": "...", "close": "..." }`, created with empty
    // entries: the template never holds a client secret; operators put the values (README.md, "Deploy to AWS").
    this.clientSecrets = new secretsmanager.Secret(this, 'ClientSecrets', {
      description: `${prefix}: OAuth client secrets of the CRM apps, one JSON entry per CRM`,
      generateSecretString: {
        secretStringTemplate: JSON.stringify(Object.fromEntries(providerIds.map((id) => [id, '']))),
        generateStringKey: 'unused',
        excludePunctuation: true,
      },
      removalPolicy: RemovalPolicy.RETAIN,
    });
    Validations.of(this.clientSecrets.node.defaultChild as secretsmanager.CfnSecret).acknowledge({
      id: 'AwsSolutions-SMG4',
      reason:
        'CRM client secrets are issued by Copper, Capsule and Close in their developer consoles; no API can rotate them, so automatic rotation is impossible. Operators replace the value by hand when the vendor reissues it.',
    });

    // Other services subscribe to this bus; it keeps its name across stateless redeploys.
    this.eventBus = new events.EventBus(this, 'EventBus', {
      eventBusName: prefix,
      description: `${prefix} events`,
    });
    this.eventBus.applyRemovalPolicy(RemovalPolicy.RETAIN);

    // Here rather than next to the function: the records are audit data, which must survive
    // `cdk destroy Stateless` and every redeploy of the code, like the table and the key.
    const trailSettings = props.settings.tokenFetchAccessTrail;
    this.tokenFetchAccessTrail = trailSettings
      ? new FunctionAccessTrail(this, 'TokenFetchAccessTrail', {
          trailName: `${prefix}-token-fetch-access`,
          functionName: functionNameFor(prefix, 'token-fetch'),
          retentionDays: trailSettings.retentionDays,
        })
      : undefined;

    new CfnOutput(this, 'TableName', { value: this.table.tableName });
    new CfnOutput(this, 'TokenKeyArn', { value: this.tokenKey.keyArn });
    new CfnOutput(this, 'ClientSecretsArn', {
      value: this.clientSecrets.secretArn,
      description: 'Put {"copper":"...","capsule":"...","close":"..."} here (README.md, "Deploy to AWS")',
    });
    new CfnOutput(this, 'EventBusName', { value: this.eventBus.eventBusName });
    new CfnOutput(this, 'EventBusArn', { value: this.eventBus.eventBusArn });
    if (this.tokenFetchAccessTrail) {
      new CfnOutput(this, 'TokenFetchAccessTrailBucketName', {
        value: this.tokenFetchAccessTrail.bucket.bucketName,
        description:
          'Who invoked token-fetch: CloudTrail log files under AWSLogs/ (README.md, "Deploy to AWS")',
      });
    }
  }

  /**
   * Target tracking on reads and writes of the table and of each index, each between the same bounds:
   * an index that runs out of write capacity throttles the table's writes too.
   */
  private autoScale(
    capacity: Extract<TableCapacity, { mode: 'provisioned' }>,
    indexes: readonly { IndexName?: string | undefined }[],
  ): void {
    const targetUtilizationPercent = capacity.targetUtilizationPercent;
    const reads = { minCapacity: capacity.reads.min, maxCapacity: capacity.reads.max };
    const writes = { minCapacity: capacity.writes.min, maxCapacity: capacity.writes.max };
    this.table.autoScaleReadCapacity(reads).scaleOnUtilization({ targetUtilizationPercent });
    this.table.autoScaleWriteCapacity(writes).scaleOnUtilization({ targetUtilizationPercent });
    for (const { IndexName: indexName } of indexes) {
      if (!indexName) continue;
      this.table
        .autoScaleGlobalSecondaryIndexReadCapacity(indexName, reads)
        .scaleOnUtilization({ targetUtilizationPercent });
      this.table
        .autoScaleGlobalSecondaryIndexWriteCapacity(indexName, writes)
        .scaleOnUtilization({ targetUtilizationPercent });
    }
  }
}
