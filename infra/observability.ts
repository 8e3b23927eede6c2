/**
 * Alarms and the dashboard. The functions publish their business metrics as
 * Powertools Metrics in CloudWatch EMF (functions/core/domain/metric-names.ts): namespace
 * `POWERTOOLS_METRICS_NAMESPACE`, dimension `service` = `POWERTOOLS_SERVICE_NAME`
 * (plus `Function` for the per-function outcomes), next to Lambda's, API
 * Gateway's and SQS's own metrics.
 */
import { Duration } from 'aws-cdk-lib';
import type * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as sns from 'aws-cdk-lib/aws-sns';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { type FunctionName, functionNames } from '../manifest/functions.ts';
import type { BrokerFunction } from './broker-function.ts';

/** The EMF metrics this stack reads; each must be one the code publishes (tested against metrics.ts). */
export const emfMetricNames = [
  'ConnectionsCreated',
  'ConnectionsReconnected',
  'ConnectionsDeleted',
  'ConnectionsNeedingReauth',
  'TokensRefreshed',
  'RefreshFailures',
  'RefreshResultsLost',
  'RefreshOutcomesUnknown',
  'ClientCredentialsRejected',
  'TokenRequestsRejected',
  'RefreshBrokerErrors',
  'GrantsRevoked',
  'RevocationsFailed',
  'ScheduledRunDue',
  'ScheduledRunRefreshed',
  'ScheduledRunFailed',
  'ScheduledRunNeedsReauth',
  'ScheduledRunDeferred',
  'ScheduledRunDispatched',
  'RefreshDispatchFailed',
  'RequestsRefused',
  'UnexpectedFailures',
  'TokenFetchLatency',
] as const;

export interface ObservabilityProps {
  readonly prefix: string;
  readonly namespace: string;
  readonly functions: ReadonlyMap<FunctionName, BrokerFunction>;
  readonly apiStage: apigwv2.HttpStage;
  readonly deadLetterQueue: sqs.IQueue;
  readonly refreshIntervalMinutes: number;
  readonly needsReauthAlarmThreshold: number;
  readonly alarmTopicArn: string | undefined;
  /** With provisioned capacity: the table and its indexes, whose throttled requests alarm. */
  readonly provisionedTable?: { readonly table: dynamodb.ITable; readonly indexNames: readonly string[] };
}

export class Observability extends Construct {
  readonly alarms: cloudwatch.Alarm[] = [];
  readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: ObservabilityProps) {
    super(scope, id);
    const { namespace } = props;
    const fn = (name: FunctionName): BrokerFunction => {
      const found = props.functions.get(name);
      if (!found) throw new Error(`no function ${name}`);
      return found;
    };

    const sum = (metricName: string, period = Duration.minutes(5), dimensionsMap?: Record<string, string>) =>
      new cloudwatch.Metric({
        namespace,
        metricName,
        statistic: cloudwatch.Stats.SUM,
        period,
        // Powertools adds the `service` dimension to every metric it publishes.
        dimensionsMap: { service: props.prefix, ...dimensionsMap },
      });
    const topic = props.alarmTopicArn
      ? sns.Topic.fromTopicArn(this, 'AlarmTopic', props.alarmTopicArn)
      : undefined;
    const alarm = (id: string, create: (id: string) => cloudwatch.Alarm): cloudwatch.Alarm => {
      const a = create(id);
      if (topic) {
        a.addAlarmAction(new actions.SnsAction(topic));
        a.addOkAction(new actions.SnsAction(topic));
      }
      this.alarms.push(a);
      return a;
    };

    // A function failed for a reason that is not a typed refusal: a thrown bug (Lambda Errors
    // minus the refusals the contract makes function errors), a timeout or crash, or a 500 page.
    const failures = new Map<FunctionName, cloudwatch.MathExpression>();
    functionNames.forEach((name, i) => {
      const f = fn(name).function;
      // Ids unique per function: the dashboard graphs all seven expressions together.
      const failure = new cloudwatch.MathExpression({
        label: `${name} failures`,
        expression: `MAX([FILL(errors${i}, 0) - FILL(refused${i}, 0), FILL(unexpected${i}, 0)])`,
        usingMetrics: {
          [`errors${i}`]: f.metricErrors({ statistic: cloudwatch.Stats.SUM, period: Duration.minutes(5) }),
          [`refused${i}`]: sum('RequestsRefused', Duration.minutes(5), { Function: name }),
          [`unexpected${i}`]: sum('UnexpectedFailures', Duration.minutes(5), { Function: name }),
        },
        period: Duration.minutes(5),
      });
      failures.set(name, failure);
      alarm(`Failures-${name}`, (id) =>
        failure.createAlarm(this, id, {
          alarmName: `${props.prefix}-function-${name}-failures`,
          alarmDescription: `${name} failed other than with a typed refusal (bug, timeout, crash or 500 page). Check its log group for "unexpected failure".`,
          threshold: 1,
          evaluationPeriods: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        }),
      );
    });

    alarm('RefreshFailures', (id) =>
      sum('RefreshFailures', Duration.minutes(15)).createAlarm(this, id, {
        alarmName: `${props.prefix}-token-refresh-failures`,
        alarmDescription:
          'Token refreshes keep failing, whatever the cause: mostly CRM outages or rate limits, also AWS dependency failures and the causes with alarms of their own. Tokens stay stored, connections stay active and are retried with backoff. The "refresh failed, connection kept" log entries give the reason and the provider.',
        threshold: 10,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );
    alarm('RefreshResultsLost', (id) =>
      sum('RefreshResultsLost').createAlarm(this, id, {
        alarmName: `${props.prefix}-refresh-result-lost`,
        alarmDescription:
          'A CRM rotated a refresh token and the broker could not store it: that connection will need re-authorization. Check DynamoDB health.',
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );
    // Refresh failures that will not pass by themselves: alarmed on the first one.
    alarm('ClientCredentialsRejected', (id) =>
      sum('ClientCredentialsRejected').createAlarm(this, id, {
        alarmName: `${props.prefix}-client-credentials-rejected`,
        alarmDescription:
          'A CRM refused the broker\'s own client credentials (invalid_client or unauthorized_client) on a refresh or a sign-in: every refresh and every new connection for that CRM fails until fixed. The "refresh failed" or "code exchange failed" log entries name the provider. Check the CRM client secret in Secrets Manager and the client id and app settings at the CRM. Connections are kept active and recover by themselves once the secret is right (at their next token fetch or scheduled refresh); no customer needs to reconnect. Functions cache the secret from their cold start, so warm ones keep the old value until Lambda replaces them; a deployment that updates the functions makes them read it again at once.',
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );
    alarm('TokenRequestsRejected', (id) =>
      sum('TokenRequestsRejected', Duration.minutes(15)).createAlarm(this, id, {
        alarmName: `${props.prefix}-token-requests-rejected`,
        alarmDescription:
          'A CRM refused a refresh request as malformed (invalid_request, unsupported_grant_type or invalid_scope): a broker bug or a change at the CRM. Connections are kept active and retried with backoff, but keep failing until the cause is fixed. The "refresh failed, connection kept" log entries (reason request_rejected) give the provider and the CRM\'s answer; check the CRM\'s changelog and the provider definition.',
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );
    alarm('RefreshBrokerErrors', (id) =>
      sum('RefreshBrokerErrors', Duration.minutes(15)).createAlarm(this, id, {
        alarmName: `${props.prefix}-refresh-broker-errors`,
        alarmDescription:
          'A refresh failed on the broker\'s own side in a way that will not heal by itself: stored tokens that cannot be decrypted (token key disabled, key policy or encryption context) or a configuration error (a missing client id or secret entry). The connection is kept but retried only after the longest backoff (6 hours). The "refresh failed, connection kept" log entries (reason broker_error) name the connection and the error; fix the cause. A connection whose stored tokens are truly unreadable must be reconnected by its customer.',
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );
    // One lost answer is a network blip; several in an hour cost grants where the CRM rotates refresh tokens.
    alarm('RefreshOutcomesUnknown', (id) =>
      sum('RefreshOutcomesUnknown', Duration.hours(1)).createAlarm(this, id, {
        alarmName: `${props.prefix}-refresh-outcomes-unknown`,
        alarmDescription:
          'Refresh answers keep getting lost after the request may have reached the CRM (timeouts, dropped connections); they are not retried, since a retry would present a rotated-away refresh token. Where the CRM rotates refresh tokens, each such connection may come to need re-authorization. Check the CRM\'s status and the network path to it; the "refresh answer lost" log entries name the connections.',
        threshold: 5,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );
    alarm('NeedsReauth', (id) =>
      sum('ConnectionsNeedingReauth', Duration.hours(1)).createAlarm(this, id, {
        alarmName: `${props.prefix}-connections-need-reauth`,
        alarmDescription:
          'Unusually many connections newly need re-authorization: a CRM app credential or scope may have changed.',
        threshold: props.needsReauthAlarmThreshold,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );

    const throttles = new cloudwatch.MathExpression({
      label: 'Lambda throttles (all broker functions)',
      expression: `SUM([${functionNames.map((_, i) => `FILL(t${i}, 0)`).join(', ')}])`,
      usingMetrics: Object.fromEntries(
        functionNames.map((name, i) => [
          `t${i}`,
          fn(name).function.metricThrottles({ statistic: cloudwatch.Stats.SUM, period: Duration.minutes(5) }),
        ]),
      ),
      period: Duration.minutes(5),
    });
    alarm('Throttles', (id) =>
      throttles.createAlarm(this, id, {
        alarmName: `${props.prefix}-lambda-throttles`,
        alarmDescription: 'Broker functions are being throttled: account concurrency is exhausted.',
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );

    const api5xx = props.apiStage.metricServerError({
      statistic: cloudwatch.Stats.SUM,
      period: Duration.minutes(5),
    });
    alarm('Api5xx', (id) =>
      api5xx.createAlarm(this, id, {
        alarmName: `${props.prefix}-api-5xx`,
        // The refresh route's function may run past API Gateway's 30 s (a refresh once sent runs to its
        // end, routes.ts): the caller then gets a 503 while the function still stores the result.
        alarmDescription:
          "The HTTP routes answered with server errors. A 503 on POST /connections/{connectionId}/refresh after 30 s can be a slow refresh the function still completed (its timeout is longer than API Gateway's); the access logs show the route and integrationError, the function logs the outcome.",
        threshold: 5,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );

    const deadLetters = props.deadLetterQueue.metricApproximateNumberOfMessagesVisible({
      statistic: cloudwatch.Stats.MAXIMUM,
      period: Duration.minutes(5),
    });
    alarm('DeadLetters', (id) =>
      deadLetters.createAlarm(this, id, {
        alarmName: `${props.prefix}-refresh-dead-letters`,
        alarmDescription:
          'A scheduled refresh run could not be delivered or failed: the message in the queue says which run.',
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );

    // The schedule stopped: no run for three intervals.
    const heartbeatPeriod = Duration.minutes(Math.max(5, props.refreshIntervalMinutes * 3));
    alarm('SchedulerStopped', (id) =>
      fn('refresh-scheduled')
        .function.metricInvocations({ statistic: cloudwatch.Stats.SUM, period: heartbeatPeriod })
        .createAlarm(this, id, {
          alarmName: `${props.prefix}-scheduled-refresh-stopped`,
          alarmDescription:
            'The scheduled refresh has not run for three intervals: tokens will start expiring.',
          threshold: 1,
          evaluationPeriods: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.BREACHING,
        }),
    );

    const provisionedTable = props.provisionedTable;
    const tableThrottles = provisionedTable
      ? (['Write', 'Read'] as const).map((kind) => {
          const throttled = this.tableThrottles(kind, provisionedTable);
          alarm(`Table${kind}Throttles`, (id) =>
            throttled.createAlarm(this, id, {
              alarmName: `${props.prefix}-table-${kind.toLowerCase()}-throttles`,
              alarmDescription: tableThrottleDescription(kind),
              threshold: 1,
              // Longer than auto scaling takes to follow a rise (a few minutes): the bounds are too tight.
              evaluationPeriods: 3,
              datapointsToAlarm: 3,
              comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
              treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
            }),
          );
          return throttled;
        })
      : [];

    const hourly = Duration.hours(1);
    const tokenFetch = fn('token-fetch').function;
    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: props.prefix,
      defaultInterval: Duration.days(7),
    });
    this.dashboard.addWidgets(
      new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: this.alarms, width: 24, height: 4 }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Connections by state: changes per hour',
        width: 12,
        left: [
          sum('ConnectionsCreated', hourly).with({ label: 'new (active)' }),
          sum('ConnectionsReconnected', hourly).with({ label: 'reconnected (active again)' }),
          sum('ConnectionsNeedingReauth', hourly).with({ label: 'became needs_reauth' }),
          sum('ConnectionsDeleted', hourly).with({ label: 'deleted' }),
        ],
      }),
      new cloudwatch.GraphWidget({
        title: 'Connections due per scheduled run',
        width: 12,
        left: [
          sum('ScheduledRunDue').with({ label: 'due', statistic: cloudwatch.Stats.MAXIMUM }),
          sum('ScheduledRunDeferred').with({
            label: 'left for the next run',
            statistic: cloudwatch.Stats.MAXIMUM,
          }),
        ],
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Refreshes',
        width: 8,
        left: [
          sum('TokensRefreshed').with({ label: 'tokens refreshed (all callers)' }),
          sum('ScheduledRunRefreshed').with({ label: 'by the schedule' }),
        ],
      }),
      new cloudwatch.GraphWidget({
        title: 'Refresh failures',
        width: 8,
        left: [
          sum('RefreshFailures').with({ label: 'failed, connection kept (all causes)' }),
          sum('ScheduledRunFailed').with({ label: 'failed (scheduler)' }),
          sum('ScheduledRunNeedsReauth').with({ label: 'grant dead (scheduler)' }),
          sum('RefreshResultsLost').with({ label: 'rotated token not stored' }),
          sum('RefreshOutcomesUnknown').with({ label: 'answer lost after sending (not retried)' }),
        ],
      }),
      new cloudwatch.GraphWidget({
        title: 'token-fetch latency',
        width: 8,
        left: (['p50', 'p90', 'p99', 'Maximum'] as const).map((statistic) =>
          tokenFetch
            .metricDuration({ statistic, period: Duration.minutes(5) })
            .with({ label: `Lambda ${statistic}` }),
        ),
        right: (['p50', 'p99'] as const).map(
          (statistic) =>
            new cloudwatch.Metric({
              namespace,
              metricName: 'TokenFetchLatency',
              statistic,
              period: Duration.minutes(5),
              dimensionsMap: { service: props.prefix },
              label: `handler ${statistic} (EMF)`,
            }),
        ),
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Failures needing an operator (each one alarms)',
        width: 12,
        left: [
          sum('ClientCredentialsRejected').with({ label: 'client credentials refused by the CRM' }),
          sum('TokenRequestsRejected').with({ label: 'token request refused as malformed' }),
          sum('RefreshBrokerErrors').with({ label: 'broker-side error (will not heal)' }),
        ],
      }),
      new cloudwatch.GraphWidget({
        title: 'Grant revocations at the CRM per hour',
        width: 12,
        left: [
          sum('GrantsRevoked', hourly).with({ label: 'revoked' }),
          sum('RevocationsFailed', hourly).with({ label: 'failed (grant may stay alive at the CRM)' }),
        ],
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Function failures (not typed refusals)',
        width: 8,
        left: [...failures.values()],
      }),
      new cloudwatch.GraphWidget({
        title: 'Public API',
        width: 8,
        left: [
          props.apiStage.metricCount({ statistic: cloudwatch.Stats.SUM, period: Duration.minutes(5) }),
          props.apiStage.metricClientError({ statistic: cloudwatch.Stats.SUM, period: Duration.minutes(5) }),
          api5xx,
        ],
        right: [props.apiStage.metricLatency({ statistic: 'p90', period: Duration.minutes(5) })],
      }),
      new cloudwatch.GraphWidget({
        title: 'Throttles and dead letters',
        width: 8,
        left: [throttles],
        right: [deadLetters.with({ label: 'dead-letter messages' })],
      }),
    );
    if (tableThrottles.length > 0) {
      this.dashboard.addWidgets(
        new cloudwatch.GraphWidget({
          title: 'DynamoDB throttled requests (table and indexes, provisioned capacity)',
          width: 24,
          left: tableThrottles,
        }),
      );
    }
  }

  /** Throttle events of the table and each index, summed: any of them holds up the broker's writes or reads. */
  private tableThrottles(
    kind: 'Write' | 'Read',
    { table, indexNames }: NonNullable<ObservabilityProps['provisionedTable']>,
  ): cloudwatch.MathExpression {
    const metric = (indexName?: string) =>
      new cloudwatch.Metric({
        namespace: 'AWS/DynamoDB',
        metricName: `${kind}ThrottleEvents`,
        statistic: cloudwatch.Stats.SUM,
        period: Duration.minutes(5),
        dimensionsMap: {
          TableName: table.tableName,
          ...(indexName ? { GlobalSecondaryIndexName: indexName } : {}),
        },
      });
    const metrics = [metric(), ...indexNames.map((name) => metric(name))];
    return new cloudwatch.MathExpression({
      label: `${kind.toLowerCase()} throttle events`,
      expression: `SUM([${metrics.map((_, i) => `FILL(${kind.toLowerCase()}${i}, 0)`).join(', ')}])`,
      usingMetrics: Object.fromEntries(metrics.map((m, i) => [`${kind.toLowerCase()}${i}`, m])),
      period: Duration.minutes(5),
    });
  }
}

const tableThrottleDescription = (kind: 'Write' | 'Read'): string => {
  const what = kind === 'Write' ? 'writes' : 'reads';
  const effect =
    kind === 'Write'
      ? 'connects, refreshes and deletes answer BrokerUnavailable, queued refreshes are retried later, and a rotated refresh token that cannot be stored counts in refresh-result-lost'
      : 'token-fetch and crm-request answer BrokerUnavailable and queued refreshes are retried later';
  return `The table or one of its indexes throttled ${what} in each of the last three 5-minute periods: provisioned ${kind.toLowerCase()} capacity (tableCapacity=provisioned) stays at tableMax${kind}Capacity, or auto scaling cannot follow the load. The SDK retries throttled requests; when retries run out, ${effect}. Compare consumed and provisioned ${kind.toLowerCase()} capacity of the table and each index in the DynamoDB console, then raise tableMax${kind}Capacity or tableMin${kind}Capacity, or go back to on demand (tableCapacity=on-demand; AWS limits how often a table may switch back).`;
};
