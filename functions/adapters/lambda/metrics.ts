/**
 * Business metrics as CloudWatch EMF (Powertools Metrics): the alarms and the
 * dashboard in `infra/observability.ts` are built on these names. Namespace and
 * service come from `POWERTOOLS_METRICS_NAMESPACE` / `POWERTOOLS_SERVICE_NAME`;
 * `POWERTOOLS_METRICS_DISABLED=true` (the local server, tests) turns them off.
 */
import { MetricUnit, Metrics } from '@aws-lambda-powertools/metrics';
import type { CountMetric, DurationMetric, FunctionMetric } from '../../core/domain/metric-names.ts';
import type { Env } from './config.ts';

export type { CountMetric, FunctionMetric } from '../../core/domain/metric-names.ts';

export class BrokerMetrics {
  constructor(private readonly metrics: Metrics) {}

  count(name: CountMetric, value = 1): void {
    this.metrics.addMetric(name, MetricUnit.Count, value);
  }

  milliseconds(name: DurationMetric, value: number): void {
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
