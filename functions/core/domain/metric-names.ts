/**
 * The business metrics the broker counts. The Lambda adapter writes them as
 * CloudWatch EMF (adapters/lambda/metrics.ts); the alarms and dashboard in
 * infra/observability.ts read these names (a template test keeps them in step).
 */

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
  | 'ScheduledRunDeferred'
  /** Due connections the dispatcher claimed and handed to their CRM's refresh queue. */
  | 'ScheduledRunDispatched'
  /** Claimed but not queued (the queue failed): they wait out their claim. */
  | 'RefreshDispatchFailed';

/** Per-function outcomes of the error-mapping middlewares (dimension `Function`). */
export type FunctionMetric = 'RequestsRefused' | 'UnexpectedFailures';

/** Durations (milliseconds). */
export type DurationMetric = 'TokenFetchLatency';
