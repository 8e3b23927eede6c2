/**
 * One construct that fixes every function's defaults (runtime, architecture,
 * bundling, logging, timeouts) and gives each function a role of its own that
 * starts empty. The `use*` helpers both set the environment variable a handler
 * reads and grant exactly the calls it makes with it, so the two never drift.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Duration, RemovalPolicy, Stack, Tags } from 'aws-cdk-lib';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as events from 'aws-cdk-lib/aws-events';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { LogLevel, NodejsFunction, OutputFormat, SourceMapMode } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { EVENT_SOURCE } from '../manifest/functions.ts';
import { type FunctionName, functionEntry, functionSettings } from '../manifest/functions.ts';
import type { IndexName, KeyAction, TableAction } from '../manifest/access.ts';
import { TOKEN_CONTEXT_KEYS, TOKEN_PURPOSE } from '../manifest/access.ts';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The newest Node.js runtime Lambda offers; esbuild targets the same version. */
export const RUNTIME = lambda.Runtime.NODEJS_24_X;
const ESBUILD_TARGET = 'node24';

/** Tag naming the broker function a resource belongs to (the tests find functions by it). */
export const FUNCTION_TAG = 'crm-oauth-broker:function';

export interface BrokerFunctionProps {
  readonly name: FunctionName;
  /** Physical function name: `<prefix>-<name>`, what callers invoke. */
  readonly functionName: string;
  /** IAM path of the role; the KMS key policy admits only roles under it. */
  readonly rolePath: string;
  readonly logRetentionDays: number;
  /** Settings every function reads (public base URL, client ids, ...). */
  readonly environment: Readonly<Record<string, string>>;
}

export class BrokerFunction extends Construct {
  readonly name: FunctionName;
  readonly function: NodejsFunction;
  readonly role: iam.Role;
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: BrokerFunctionProps) {
    super(scope, id);
    const settings = functionSettings[props.name];
    this.name = props.name;

    this.logGroup = new logs.LogGroup(this, 'Logs', {
      retention: props.logRetentionDays as logs.RetentionDays,
      // Logs go with the stateless stack; the tokens never reach them (security.md row 8).
      removalPolicy: RemovalPolicy.DESTROY,
    });

    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      path: props.rolePath,
      description: `${props.functionName}: only what this function's code calls`,
    });
    // Instead of AWSLambdaBasicExecutionRole (every log group in the account): its own log group only.
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'WriteOwnLogs',
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [this.logGroup.logGroupArn],
      }),
    );

    this.function = new NodejsFunction(this, 'Function', {
      functionName: props.functionName,
      description: settings.description,
      entry: path.join(REPO_ROOT, functionEntry(props.name)),
      handler: 'handler',
      runtime: RUNTIME,
      architecture: lambda.Architecture.ARM_64,
      memorySize: settings.memoryMb,
      timeout: Duration.seconds(settings.timeoutSeconds),
      role: this.role,
      logGroup: this.logGroup,
      loggingFormat: lambda.LoggingFormat.JSON,
      applicationLogLevelV2: lambda.ApplicationLogLevel.INFO,
      systemLogLevelV2: lambda.SystemLogLevel.WARN,
      depsLockFilePath: path.join(REPO_ROOT, 'package-lock.json'),
      projectRoot: REPO_ROOT,
      // Stack traces point at the TypeScript sources (the bundles ship external source maps).
      environment: { ...props.environment, NODE_OPTIONS: '--enable-source-maps' },
      bundling: {
        format: OutputFormat.ESM,
        target: ESBUILD_TARGET,
        minify: true,
        sourceMap: true,
        sourceMapMode: SourceMapMode.EXTERNAL,
        sourcesContent: false,
        // The exact SDK versions package-lock.json pins, not whatever the runtime ships.
        bundleAwsSDK: true,
        externalModules: [],
        mainFields: ['module', 'main'],
        // Some CommonJS dependencies call `require`; ESM output has none unless we make one.
        banner: "import{createRequire as __cr}from'node:module';const require=__cr(import.meta.url);",
        tsconfig: path.join(REPO_ROOT, 'tsconfig.json'),
        forceDockerBundling: false,
        logLevel: LogLevel.WARNING,
      },
    });
    Tags.of(this).add(FUNCTION_TAG, props.name);
  }

  private grant(statement: iam.PolicyStatementProps): void {
    this.role.addToPrincipalPolicy(new iam.PolicyStatement(statement));
  }

  private setEnv(name: string, value: string): void {
    this.function.addEnvironment(name, value);
  }

  /**
   * `TABLE_NAME`, plus the item operations and index queries the code makes.
   * The table is encrypted with the customer managed key, and DynamoDB decrypts
   * its table key with the caller's permissions: every item call needs
   * kms:Decrypt, allowed only when the call comes through DynamoDB.
   */
  useTable(
    table: dynamodb.ITable,
    actions: readonly TableAction[],
    queries: readonly IndexName[] = [],
  ): void {
    this.setEnv('TABLE_NAME', table.tableName);
    this.grant({ sid: 'TableItems', actions: [...actions], resources: [table.tableArn] });
    if (queries.length > 0) {
      this.grant({
        sid: 'TableIndexQueries',
        actions: ['dynamodb:Query'],
        resources: queries.map((index) => `${table.tableArn}/index/${index}`),
      });
    }
    if (table.encryptionKey) {
      this.grant({
        sid: 'TableEncryptionAtRest',
        actions: ['kms:Decrypt'],
        resources: [table.encryptionKey.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': `dynamodb.${Stack.of(this).region}.amazonaws.com` } },
      });
    }
  }

  /**
   * `KMS_KEY_ID` is read by every function at cold start (config.ts refuses to
   * start without it), so it is set here; the permission is separate and only
   * for functions that encrypt or decrypt.
   */
  setTokenKeyId(key: kms.IKey): void {
    this.setEnv('KMS_KEY_ID', key.keyArn);
  }

  /** Envelope-key operations, only with the token encryption context (security.md row 13). */
  useTokenKey(key: kms.IKey, actions: readonly KeyAction[]): void {
    this.setTokenKeyId(key);
    this.grant({
      sid: 'TokenEnvelopeKey',
      actions: [...actions],
      resources: [key.keyArn],
      conditions: {
        StringEquals: { 'kms:EncryptionContext:purpose': TOKEN_PURPOSE },
        'ForAllValues:StringEquals': { 'kms:EncryptionContextKeys': [...TOKEN_CONTEXT_KEYS] },
      },
    });
  }

  /** `CLIENT_SECRETS_ARN` and reading that one secret (once per cold start, cached by secrets.ts). */
  useClientSecrets(secret: secretsmanager.ISecret): void {
    this.setEnv('CLIENT_SECRETS_ARN', secret.secretArn);
    this.grant({
      sid: 'ReadClientSecrets',
      actions: ['secretsmanager:GetSecretValue'],
      resources: [secret.secretArn],
    });
  }

  /** `EVENT_BUS_NAME` and PutEvents on that bus, with the broker's own source only. */
  publishTo(bus: events.IEventBus): void {
    this.setEnv('EVENT_BUS_NAME', bus.eventBusName);
    this.grant({
      sid: 'PublishEvents',
      actions: ['events:PutEvents'],
      resources: [bus.eventBusArn],
      conditions: { StringEquals: { 'events:source': EVENT_SOURCE } },
    });
  }

  /**
   * Asynchronous invocations (the schedule) that fail go to `queue`, not
   * retried by Lambda: the next scheduled run picks the work up anyway.
   */
  sendFailedAsyncInvocationsTo(queue: sqs.IQueue, maxEventAge: Duration): void {
    this.function.configureAsyncInvoke({
      retryAttempts: 0,
      maxEventAge,
      // A plain destination: the SqsDestination helper would also grant GetQueueAttributes and GetQueueUrl.
      onFailure: { bind: () => ({ destination: queue.queueArn }) },
    });
    this.grant({
      sid: 'AsyncFailuresToDeadLetterQueue',
      actions: ['sqs:SendMessage'],
      resources: [queue.queueArn],
    });
  }
}
