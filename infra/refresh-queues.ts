/**
 * The refresh queues (docs/scale.md): one SQS standard queue per CRM, each with
 * a dead-letter queue, driving `refresh-worker` through an event source mapping
 * whose maximum concurrency is that CRM's worker cap, so its token endpoint
 * never sees more refreshes at once from us. The dispatcher (`refresh-scheduled`)
 * may only send to them; the worker may only consume them. Alarms on the age of
 * each queue's oldest message and on each dead-letter queue, and a dashboard row.
 */
import { Duration, Tags, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { type ProviderId, providerIds } from '../manifest/functions.ts';
import {
  CLAIM_WINDOW_SECONDS,
  QUEUE_MAX_RECEIVE_COUNT,
  QUEUE_VISIBILITY_TIMEOUT_SECONDS,
  workerShape,
  queueUrlEnv,
} from '../manifest/refresh-queues.ts';
import type { BrokerFunction } from './broker-function.ts';

/** Tag naming what a queue is for (`refresh-close`, `refresh-close-dead-letters`); the tests find queues by it. */
export const QUEUE_TAG = 'crm-oauth-broker:queue';

/**
 * A message older than this means the CRM's workers are behind (an outage, or a
 * cap too low for the load): Close's tokens are due 15 minutes before expiry,
 * so at 10 minutes there is still time to act before they lapse.
 */
export const QUEUE_AGE_ALARM_SECONDS = 600;

export interface RefreshQueuesProps {
  readonly prefix: string;
  readonly dispatcher: BrokerFunction;
  readonly worker: BrokerFunction;
  /** Each CRM's worker cap (settings.ts, `<crm>RefreshWorkerCap`). */
  readonly caps: Readonly<Record<ProviderId, number>>;
  /** Of the broker's EMF metrics (observability.ts). */
  readonly namespace: string;
  /** Every alarm notifies it, as the other alarms do. */
  readonly alarmTopicArn: string | undefined;
  /** Gets a row of widgets. */
  readonly dashboard: cloudwatch.Dashboard;
}

const pascal = (s: string) => (s[0]?.toUpperCase() ?? '') + s.slice(1);

export class RefreshQueues extends Construct {
  readonly queues = new Map<ProviderId, sqs.Queue>();
  readonly deadLetters = new Map<ProviderId, sqs.Queue>();

  constructor(scope: Construct, id: string, props: RefreshQueuesProps) {
    super(scope, id);
    for (const provider of providerIds) {
      const name = pascal(provider);
      const deadLetters = new sqs.Queue(this, `${name}DeadLetters`, {
        encryption: sqs.QueueEncryption.SQS_MANAGED,
        enforceSSL: true,
        retentionPeriod: Duration.days(14),
      });
      Tags.of(deadLetters).add(QUEUE_TAG, `refresh-${provider}-dead-letters`);
      Validations.of(deadLetters.node.defaultChild as sqs.CfnQueue).acknowledge({
        id: 'AwsSolutions-SQS3',
        reason: `The dead-letter queue of the ${provider} refresh queue itself; nothing consumes it automatically: its alarm calls a person, who redrives or deletes its messages (docs/scale.md).`,
      });
      const queue = new sqs.Queue(this, `${name}Queue`, {
        encryption: sqs.QueueEncryption.SQS_MANAGED,
        enforceSSL: true,
        visibilityTimeout: Duration.seconds(QUEUE_VISIBILITY_TIMEOUT_SECONDS),
        // A message older than its claim is stale (the dispatcher has handed the connection out again).
        retentionPeriod: Duration.seconds(CLAIM_WINDOW_SECONDS),
        deadLetterQueue: { queue: deadLetters, maxReceiveCount: QUEUE_MAX_RECEIVE_COUNT },
      });
      Tags.of(queue).add(QUEUE_TAG, `refresh-${provider}`);
      this.queues.set(provider, queue);
      this.deadLetters.set(provider, deadLetters);

      props.dispatcher.function.addEnvironment(queueUrlEnv(provider), queue.queueUrl);
      // The cap is refreshes at once: invocations at once times each one's batch, refreshed side by side.
      const shape = workerShape(props.caps[provider]);
      new lambda.EventSourceMapping(this, `${name}Worker`, {
        target: props.worker.function,
        eventSourceArn: queue.queueArn,
        batchSize: shape.batchSize,
        maxConcurrency: shape.invocations,
        reportBatchItemFailures: true,
      });
    }
    const queueArns = [...this.queues.values()].map((q) => q.queueArn);
    // SendMessageBatch is authorized as sqs:SendMessage.
    props.dispatcher.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'SendToRefreshQueues',
        actions: ['sqs:SendMessage'],
        resources: queueArns,
      }),
    );
    // What Lambda's pollers do with the function's role (AWS's SQS event source permissions), no more.
    props.worker.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ConsumeRefreshQueues',
        actions: ['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes'],
        resources: queueArns,
      }),
    );
    this.observe(props);
  }

  private observe(props: RefreshQueuesProps): void {
    const period = Duration.minutes(1);
    const topic = props.alarmTopicArn
      ? sns.Topic.fromTopicArn(this, 'AlarmTopic', props.alarmTopicArn)
      : undefined;
    const addAlarm = (id: string, create: (scope: Construct, id: string) => cloudwatch.Alarm) => {
      const alarm = create(this, id);
      if (topic) {
        alarm.addAlarmAction(new actions.SnsAction(topic));
        alarm.addOkAction(new actions.SnsAction(topic));
      }
      return alarm;
    };
    // Powertools adds the `service` dimension to every metric it publishes.
    const metric = (metricName: string) =>
      new cloudwatch.Metric({
        namespace: props.namespace,
        metricName,
        statistic: cloudwatch.Stats.SUM,
        period: Duration.minutes(5),
        dimensionsMap: { service: props.prefix },
      });
    const age: cloudwatch.IMetric[] = [];
    const depth: cloudwatch.IMetric[] = [];
    const dead: cloudwatch.IMetric[] = [];
    const alarms: cloudwatch.Alarm[] = [];
    for (const provider of providerIds) {
      const queue = this.queues.get(provider) as sqs.Queue;
      const deadLetters = this.deadLetters.get(provider) as sqs.Queue;
      const oldest = queue.metricApproximateAgeOfOldestMessage({
        statistic: cloudwatch.Stats.MAXIMUM,
        period,
      });
      age.push(oldest.with({ label: provider }));
      depth.push(
        queue.metricApproximateNumberOfMessagesVisible({ statistic: cloudwatch.Stats.MAXIMUM, period }).with({
          label: `${provider} waiting`,
        }),
        queue
          .metricApproximateNumberOfMessagesNotVisible({ statistic: cloudwatch.Stats.MAXIMUM, period })
          .with({
            label: `${provider} with a worker`,
          }),
      );
      const deadCount = deadLetters.metricApproximateNumberOfMessagesVisible({
        statistic: cloudwatch.Stats.MAXIMUM,
        period: Duration.minutes(5),
      });
      dead.push(deadCount.with({ label: provider }));
      alarms.push(
        addAlarm(`RefreshQueueAge-${provider}`, (scope, id) =>
          oldest.createAlarm(scope, id, {
            alarmName: `${props.prefix}-refresh-queue-${provider}-age`,
            alarmDescription: `The oldest message in the ${provider} refresh queue has waited over ${QUEUE_AGE_ALARM_SECONDS / 60} minutes: its workers are behind (a CRM outage or slowness, or a worker cap too low for the load). Tokens may reach expiry before their refresh (fetches still refresh on demand). Check the CRM's status and the refresh-worker logs; raise ${provider}RefreshWorkerCap if the CRM allows it (docs/scale.md).`,
            threshold: QUEUE_AGE_ALARM_SECONDS,
            evaluationPeriods: 3,
            comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
          }),
        ),
        addAlarm(`RefreshDeadLetters-${provider}`, (scope, id) =>
          deadCount.createAlarm(scope, id, {
            alarmName: `${props.prefix}-refresh-queue-${provider}-dead-letters`,
            alarmDescription: `A ${provider} refresh message failed ${QUEUE_MAX_RECEIVE_COUNT} deliveries and was dead-lettered: the worker could not even start on it (the table unreachable, or a message it cannot read). Its connection is handed out again once its claim lapses (1 hour). Read the refresh-worker log entries "refresh queue message failed", fix the cause, then redrive the dead-letter queue to its source or delete the messages (docs/scale.md).`,
            threshold: 1,
            evaluationPeriods: 1,
            comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
          }),
        ),
      );
    }
    const dispatchFailed = metric('RefreshDispatchFailed');
    alarms.push(
      addAlarm('RefreshDispatchFailed', (scope, id) =>
        dispatchFailed.createAlarm(scope, id, {
          alarmName: `${props.prefix}-refresh-dispatch-failed`,
          alarmDescription:
            'The dispatcher claimed due connections but could not send them to their refresh queue (SQS refused or was unreachable). Those connections are handed out again once their claim lapses (1 hour); fetches refresh on demand meanwhile. Check the refresh-scheduled logs ("refresh queue send failed") and SQS health.',
          threshold: 1,
          evaluationPeriods: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        }),
      ),
    );
    props.dashboard.addWidgets(
      new cloudwatch.AlarmStatusWidget({ title: 'Refresh queues: alarms', alarms, width: 24, height: 3 }),
    );
    props.dashboard.addWidgets(
      new cloudwatch.GraphWidget({ title: 'Refresh queue depth per CRM', width: 6, left: depth }),
      new cloudwatch.GraphWidget({
        title: 'Refresh queue age of oldest message (s)',
        width: 6,
        left: age,
        leftAnnotations: [{ value: QUEUE_AGE_ALARM_SECONDS, label: 'alarm' }],
      }),
      new cloudwatch.GraphWidget({ title: 'Refresh dead letters per CRM', width: 6, left: dead }),
      new cloudwatch.GraphWidget({
        title: 'Dispatched per run',
        width: 6,
        left: [
          metric('ScheduledRunDispatched').with({ label: 'handed to the queues' }),
          dispatchFailed.with({ label: 'claimed, not queued' }),
        ],
      }),
    );
  }
}
