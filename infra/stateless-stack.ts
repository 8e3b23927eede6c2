/**
 * The code and how it is reached: the functions (built from the route table's
 * function list), the HTTP API (built from its routes), the refresh schedule,
 * alarms and the dashboard. Nothing here holds data; it can be destroyed and
 * redeployed while the stateful stack keeps the table, key and secrets.
 */
import { CfnOutput, Duration, RemovalPolicy, Stack, type StackProps, Validations } from 'aws-cdk-lib';
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpIamAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as acm from 'aws-cdk-lib/aws-certificatemanager';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as events from 'aws-cdk-lib/aws-events';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as schedulerTargets from 'aws-cdk-lib/aws-scheduler-targets';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { envPrefix, providerIds } from '../manifest/functions.ts';
import {
  type FunctionName,
  functionNames,
  httpRoutes,
  invokableFunctions,
  refreshingFunctions,
} from '../manifest/functions.ts';
import { functionAccess } from '../manifest/access.ts';
import { tableDefinition } from '../manifest/table.ts';
import { BrokerFunction } from './broker-function.ts';
import { Observability } from './observability.ts';
import { RefreshQueues } from './refresh-queues.ts';
import type { BrokerSettings } from './settings.ts';
import { functionNameFor, rolePathFor } from './stateful-stack.ts';

export interface StatelessStackProps extends StackProps {
  readonly settings: BrokerSettings;
  readonly table: dynamodb.ITable;
  readonly tokenKey: kms.IKey;
  readonly clientSecrets: secretsmanager.ISecret;
  readonly eventBus: events.IEventBus;
}

/**
 * Access log line: who, which route, what status, how long. `$context.path` is
 * the path without the query string; the query (session, code, state) is never
 * logged (security.md row 8).
 */
export const ACCESS_LOG_FORMAT = {
  requestId: '$context.requestId',
  requestTime: '$context.requestTime',
  ip: '$context.identity.sourceIp',
  userAgent: '$context.identity.userAgent',
  caller: '$context.identity.userArn',
  routeKey: '$context.routeKey',
  path: '$context.path',
  protocol: '$context.protocol',
  status: '$context.status',
  responseLength: '$context.responseLength',
  responseLatency: '$context.responseLatency',
  integrationLatency: '$context.integrationLatency',
  integrationError: '$context.integrationErrorMessage',
};

/** Title-case for output ids: `token-fetch` -> `TokenFetch`. */
const pascal = (name: string): string =>
  name
    .split('-')
    .map((part) => (part[0]?.toUpperCase() ?? '') + part.slice(1))
    .join('');

export class StatelessStack extends Stack {
  readonly functions: ReadonlyMap<FunctionName, BrokerFunction>;
  readonly api: apigwv2.HttpApi;
  readonly publicBaseUrl: string;

  constructor(scope: Construct, id: string, props: StatelessStackProps) {
    super(scope, id, props);
    const { settings } = props;
    const { prefix } = settings;
    const namespace = `CrmOAuthBroker/${prefix}`;

    const domain = settings.customDomain
      ? new apigwv2.DomainName(this, 'Domain', {
          domainName: settings.customDomain.domainName,
          certificate: acm.Certificate.fromCertificateArn(
            this,
            'Certificate',
            settings.customDomain.certificateArn,
          ),
        })
      : undefined;

    this.api = new apigwv2.HttpApi(this, 'Api', {
      apiName: prefix,
      description: `${prefix}: public OAuth routes and the IAM-authorized refresh route`,
      createDefaultStage: false,
      // With a custom domain the execute-api URL would be a second, unregistered way in.
      disableExecuteApiEndpoint: domain !== undefined,
    });
    this.publicBaseUrl = domain ? `https://${settings.customDomain?.domainName}` : this.api.apiEndpoint;

    // Settings every function reads at cold start (config.ts); the resource ones are set by the bind helpers.
    const environment: Record<string, string> = {
      PUBLIC_BASE_URL: this.publicBaseUrl,
      REFRESH_INTERVAL_SECONDS: String(settings.refreshIntervalMinutes * 60),
      POWERTOOLS_SERVICE_NAME: prefix,
      POWERTOOLS_METRICS_NAMESPACE: namespace,
    };
    if (settings.returnToOrigins) environment.RETURN_TO_ORIGINS = settings.returnToOrigins.join(',');
    if (settings.refreshLeadSeconds !== undefined) {
      environment.REFRESH_LEAD_SECONDS = String(settings.refreshLeadSeconds);
    }
    for (const provider of providerIds) {
      const clientId = settings.clientIds[provider];
      if (clientId) environment[`${envPrefix(provider)}_CLIENT_ID`] = clientId;
      const rateLimit = settings.crmRateLimits[provider];
      if (rateLimit) environment[`${envPrefix(provider)}_RATE_LIMIT`] = rateLimit;
    }

    const functions = new Map<FunctionName, BrokerFunction>();
    for (const name of functionNames) {
      const fn = new BrokerFunction(this, pascal(name), {
        name,
        functionName: functionNameFor(prefix, name),
        rolePath: rolePathFor(prefix),
        logRetentionDays: settings.logRetentionDays,
        environment,
      });
      const access = functionAccess[name];
      fn.useTable(props.table, access.table, access.queries);
      if (access.tokenKey) fn.useTokenKey(props.tokenKey, access.tokenKey);
      else fn.setTokenKeyId(props.tokenKey);
      if (access.clientSecrets) fn.useClientSecrets(props.clientSecrets);
      if (access.events) fn.publishTo(props.eventBus);
      // Written out either way, so the template shows whether refreshes are announced (contract.md, Events).
      if (refreshingFunctions.includes(name)) {
        fn.function.addEnvironment('PUBLISH_REFRESHED_EVENTS', String(settings.publishRefreshedEvents));
      }
      functions.set(name, fn);
    }
    this.functions = functions;
    const get = (name: FunctionName): BrokerFunction => functions.get(name) as BrokerFunction;

    // Routes: exactly the route table the local server serves.
    const accessLogs = new logs.LogGroup(this, 'ApiAccessLogs', {
      retention: settings.logRetentionDays as logs.RetentionDays,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const stage = new apigwv2.HttpStage(this, 'DefaultStage', {
      httpApi: this.api,
      stageName: '$default',
      autoDeploy: true,
      ...(domain ? { domainMapping: { domainName: domain } } : {}),
      // Default for every route (the IAM-authorized ones); public routes get their own below.
      throttle: { rateLimit: settings.serviceRouteRateLimit, burstLimit: settings.serviceRouteRateLimit * 2 },
      accessLogSettings: {
        destination: new apigwv2.LogGroupLogDestination(accessLogs),
        format: AccessLogFormat.custom(JSON.stringify(ACCESS_LOG_FORMAT)),
      },
    });
    const integrations = new Map<FunctionName, HttpLambdaIntegration>();
    const routeSettings: Record<string, { ThrottlingRateLimit: number; ThrottlingBurstLimit: number }> = {};
    for (const route of httpRoutes) {
      let integration = integrations.get(route.function);
      if (!integration) {
        integration = new HttpLambdaIntegration(
          `${pascal(route.function)}Integration`,
          get(route.function).function,
          {
            payloadFormatVersion: apigwv2.PayloadFormatVersion.VERSION_2_0,
          },
        );
        integrations.set(route.function, integration);
      }
      const [created] = this.api.addRoutes({
        path: route.path,
        methods: [apigwv2.HttpMethod[route.method]],
        integration,
        ...(route.authorization === 'IAM' ? { authorizer: new HttpIamAuthorizer() } : {}),
      });
      if (!created) throw new Error(`no route created for ${route.method} ${route.path}`);
      stage.node.addDependency(created);
      if (route.authorization === 'NONE') {
        routeSettings[`${route.method} ${route.path}`] = {
          ThrottlingRateLimit: settings.publicRouteRateLimit,
          ThrottlingBurstLimit: settings.publicRouteRateLimit * 2,
        };
        // On the route resource itself, not its integration and permission.
        Validations.of(created.node.defaultChild as apigwv2.CfnRoute).acknowledge({
          id: 'AwsSolutions-APIG4',
          reason: `${route.method} ${route.path} is reached by a person's browser (redirects to and from the CRM), so it cannot carry AWS credentials; it is public by design (interface.md), protected by the single-use connect session, state, PKCE and the browser-binding cookie (security.md rows 1-7), and throttled per route.`,
        });
      }
    }
    (stage.node.defaultChild as apigwv2.CfnStage).routeSettings = routeSettings;

    // The schedule: bounded retries, then a dead-letter queue, for delivery and for the run itself.
    const deadLetters = new sqs.Queue(this, 'RefreshDeadLetters', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    Validations.of(deadLetters.node.defaultChild as sqs.CfnQueue).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason:
        'This queue is itself the dead-letter destination of the refresh schedule and of refresh-scheduled asynchronous invocations; nothing consumes it automatically, the alarm on its depth calls a person.',
    });
    const interval = Duration.minutes(settings.refreshIntervalMinutes);
    // A run older than one interval is superseded by the next one.
    const maxEventAge = Duration.seconds(Math.max(60, interval.toSeconds()));
    const refreshScheduled = get('refresh-scheduled');
    refreshScheduled.sendFailedAsyncInvocationsTo(deadLetters, maxEventAge);
    // Our own role: the target helper's would also allow invoking any version or alias (`<arn>:*`).
    const schedulerRole = new iam.Role(this, 'RefreshScheduleRole', {
      assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com', {
        conditions: { StringEquals: { 'aws:SourceAccount': this.account } },
      }),
      description: `${prefix}: the refresh schedule invokes refresh-scheduled, dead letters to its queue`,
    });
    schedulerRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'InvokeRefreshScheduled',
        actions: ['lambda:InvokeFunction'],
        resources: [refreshScheduled.function.functionArn],
      }),
    );
    schedulerRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'UndeliveredRunsToDeadLetterQueue',
        actions: ['sqs:SendMessage'],
        resources: [deadLetters.queueArn],
      }),
    );
    new scheduler.Schedule(this, 'RefreshSchedule', {
      description: `${prefix}: refresh tokens due soon`,
      schedule: scheduler.ScheduleExpression.rate(interval),
      target: new schedulerTargets.LambdaInvoke(refreshScheduled.function, {
        role: schedulerRole.withoutPolicyUpdates(),
        retryAttempts: 2,
        maxEventAge,
        deadLetterQueue: deadLetters,
      }),
    });

    const observability = new Observability(this, 'Observability', {
      prefix,
      namespace,
      functions,
      apiStage: stage,
      deadLetterQueue: deadLetters,
      refreshIntervalMinutes: settings.refreshIntervalMinutes,
      needsReauthAlarmThreshold: settings.needsReauthAlarmThreshold,
      alarmTopicArn: settings.alarmTopicArn,
      ...(settings.tableCapacity.mode === 'provisioned'
        ? {
            provisionedTable: {
              table: props.table,
              indexNames: (tableDefinition('unused').GlobalSecondaryIndexes ?? []).flatMap((index) =>
                index.IndexName ? [index.IndexName] : [],
              ),
            },
          }
        : {}),
    });

    // The dispatcher hands due connections to one queue per CRM; capped workers refresh them.
    new RefreshQueues(this, 'RefreshQueues', {
      prefix,
      dispatcher: refreshScheduled,
      worker: get('refresh-worker'),
      caps: settings.refreshWorkerCaps,
      namespace,
      alarmTopicArn: settings.alarmTopicArn,
      dashboard: observability.dashboard,
    });

    new CfnOutput(this, 'ApiUrl', {
      value: this.publicBaseUrl,
      description: 'PUBLIC_BASE_URL of the broker',
    });
    if (domain) {
      new CfnOutput(this, 'DomainTarget', {
        value: domain.regionalDomainName,
        description: `Point ${settings.customDomain?.domainName} here (CNAME or Route 53 alias)`,
      });
    }
    for (const provider of providerIds) {
      new CfnOutput(this, `CallbackUrl${pascal(provider)}`, {
        value: `${this.publicBaseUrl}/callback/${provider}`,
        description: `Redirect URI to register in the ${provider} OAuth app`,
      });
    }
    for (const name of invokableFunctions) {
      const f = get(name).function;
      new CfnOutput(this, `${pascal(name)}FunctionName`, { value: f.functionName });
      new CfnOutput(this, `${pascal(name)}FunctionArn`, { value: f.functionArn });
    }
    new CfnOutput(this, 'RefreshDeadLetterQueueUrl', { value: deadLetters.queueUrl });
  }
}
