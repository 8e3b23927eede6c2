/**
 * Business metrics as CloudWatch EMF (Powertools Metrics): the alarms and the
 * dashboard in `infra/observability.ts` are built on these names. Namespace and
 * service come from `POWERTOOLS_METRICS_NAMESPACE` / `POWERTOOLS_SERVICE_NAME`;
 * `POWERTOOLS_METRICS_DISABLED=true` (the local server, tests) turns them off.
 */
import { MetricUnit, Metrics } from '@aws-lambda-powertools/metrics';
import type { Env } from './config.ts';

export type CountMetric =
  | 'ConnectionsCreated'
  | 'ConnectionsReconnected'
  | 'ConnectionsDeleted'
  | 'ConnectionsNeedingReauth'
  | 'TokensRefreshed'
  | 'RefreshFailures'
  | 'RefreshResultsLost'
  /** A refresh answer lost after the request may have reached the CRM (not retried: row 18). */
  | 'RefreshOutcomesUnknown'
  /** Operator alarms: the CRM refused the broker's client credentials (refresh or code exchange). */
  | 'ClientCredentialsRejected'
  /** Operator alarms: the CRM refused a token request as malformed (`invalid_request`, ...). */
  | 'TokenRequestsRejected'
  /** Operator alarms: a refresh failed on the broker's side in a way that will not heal by itself. */
  | 'RefreshBrokerErrors'
  | 'GrantsRevoked'
  | 'RevocationsFailed'
  | 'ScheduledRunDue'
  | 'ScheduledRunRefreshed'
  | 'ScheduledRunFailed'
  | 'ScheduledRunNeedsReauth'
  | 'ScheduledRunDeferred';

/** Per-function outcomes of the error-mapping middlewares (dimension `Function`). */
export type FunctionMetric = 'RequestsRefused' | 'UnexpectedFailures';

export class BrokerMetrics {
  constructor(private readonly metrics: Metrics) {}

  count(name: CountMetric, value = 1): void {
    this.metrics.addMetric(name, MetricUnit.Count, value);
  }

  milliseconds(name: 'TokenFetchLatency', value: number): void {
    this.metrics.addMetric(name, MetricUnit.Milliseconds, value);
  }

  perFunction(name: FunctionMetric, functionName: string): void {
    const single = this.metrics.singleMetric();
    single.addDimension('Function', functionName);
    single.addMetric(name, MetricUnit.Count, 1);
  }

  /** Writes what this invocation recorded (nothing, and no warning, when it recorded nothing). */
  flush(): void {
    if (this.metrics.hasStoredMetrics()) this.metrics.publishStoredMetrics();
  }
}

export const createMetrics = (env: Env): BrokerMetrics =>
  new BrokerMetrics(
    new Metrics({
      namespace: env.POWERTOOLS_METRICS_NAMESPACE || 'CrmOAuthBroker',
      serviceName: env.POWERTOOLS_SERVICE_NAME || 'crm-oauth-broker',
    }),
  );
