/**
 * Business metrics as CloudWatch EMF (Powertools Metrics): the alarms and the
 * dashboard in `infra/observability.ts` are built on these names. Namespace and
 * service come from `POWERTOOLS_METRICS_NAMESPACE` / `POWERTOOLS_SERVICE_NAME`;
 * `POWERTOOLS_METRICS_DISABLED=true` (the local server, tests) turns them off.
 * Handlers flush them with Powertools' `logMetrics` middleware (middleware.ts).
 */
import { MetricUnit, Metrics } from '@aws-lambda-powertools/metrics';
import type { CountMetric, DurationMetric, FunctionMetric } from '../../core/domain/metric-names.ts';
import type { Env } from './config.ts';

export type { CountMetric, FunctionMetric } from '../../core/domain/metric-names.ts';

/**
 * Powertools `Metrics` that publishes only when the invocation recorded something:
 * most invocations record nothing, and the stock `publishStoredMetrics` (which
 * `logMetrics` calls after every invocation) would then warn "No application
 * metrics to publish" each time.
 */
export class QuietMetrics extends Metrics {
  override publishStoredMetrics(): this {
    return this.hasStoredMetrics() ? super.publishStoredMetrics() : this;
  }
}

export class BrokerMetrics {
  /** The Powertools instance, for `logMetrics`. */
  constructor(readonly powertools: Metrics) {}

  count(name: CountMetric, value = 1): void {
    this.powertools.addMetric(name, MetricUnit.Count, value);
  }

  milliseconds(name: DurationMetric, value: number): void {
    this.powertools.addMetric(name, MetricUnit.Milliseconds, value);
  }

  perFunction(name: FunctionMetric, functionName: string): void {
    const single = this.powertools.singleMetric();
    single.addDimension('Function', functionName);
    single.addMetric(name, MetricUnit.Count, 1);
  }

  /** Writes what was recorded (nothing, and no warning, when nothing was); `logMetrics` does this per invocation. */
  flush(): void {
    if (this.powertools.hasStoredMetrics()) this.powertools.publishStoredMetrics();
  }
}

export const createMetrics = (env: Env): BrokerMetrics =>
  new BrokerMetrics(
    new QuietMetrics({
      namespace: env.POWERTOOLS_METRICS_NAMESPACE || 'CrmOAuthBroker',
      serviceName: env.POWERTOOLS_SERVICE_NAME || 'crm-oauth-broker',
    }),
  );
