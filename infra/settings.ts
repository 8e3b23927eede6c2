/**
 * Deployment settings, read once from CDK context (`cdk.json` or `-c key=value`)
 * and checked before anything is built: a bad value fails `cdk synth`, not the
 * first request. Nothing secret belongs here; client secrets live in Secrets
 * Manager (see README.md, "Deploy to AWS").
 */
import { type ProviderId, integerIn, originOf, providerIds } from '../manifest/functions.ts';
import { DEFAULT_WORKER_CAPS, MAX_WORKER_CAP, MIN_WORKER_CAP } from '../manifest/refresh-queues.ts';

export interface CustomDomain {
  /** e.g. `crm-auth.example.com`; becomes `PUBLIC_BASE_URL`. */
  readonly domainName: string;
  /** ACM certificate for `domainName`, in the stack's region. */
  readonly certificateArn: string;
}

export interface AccessTrail {
  /** Days the trail's log files are kept in its bucket before they expire. */
  readonly retentionDays: number;
}

/**
 * How the table pays for capacity. On demand (the default) bills each request; provisioned bills
 * capacity by the hour, kept at `targetUtilizationPercent` of what is consumed by target-tracking auto
 * scaling between `min` and `max`, for the table and each index separately (docs/deploy.md).
 */
export type TableCapacity =
  | { readonly mode: 'on-demand' }
  | {
      readonly mode: 'provisioned';
      readonly writes: CapacityRange;
      readonly reads: CapacityRange;
      readonly targetUtilizationPercent: number;
    };

/** Capacity units auto scaling may set, per second, for the table and for each index. */
export interface CapacityRange {
  readonly min: number;
  readonly max: number;
}

export interface BrokerSettings {
  /** Names everything: stacks `<prefix>-stateful`/`-stateless`, functions `<prefix>-<name>`, role path `/<prefix>/`. */
  readonly prefix: string;
  /** OAuth client id of each CRM app; a CRM without one is not offered. */
  readonly clientIds: Readonly<Partial<Record<ProviderId, string>>>;
  /** Exact origins allowed for `returnTo`; unset means only the broker's own origin. */
  readonly returnToOrigins: readonly string[] | undefined;
  readonly customDomain: CustomDomain | undefined;
  /** The scheduled refresh dispatcher's rate, in minutes. */
  readonly refreshIntervalMinutes: number;
  /**
   * Each CRM's worker cap: refreshes in flight at once at its token endpoint, the maximum
   * concurrency of its refresh queue's event source mapping (`<crm>RefreshWorkerCap`, 2 to 10,000;
   * defaults and their reasons in manifest/refresh-queues.ts and docs/scale.md).
   */
  readonly refreshWorkerCaps: Readonly<Record<ProviderId, number>>;
  /**
   * Each CRM's API budget shared by all callers of an account (`<crm>RateLimit` as
   * `<requests>/<seconds>`, e.g. `"20/1"`, becomes `<P>_RATE_LIMIT`); unset keeps the documented default.
   */
  readonly crmRateLimits: Readonly<Partial<Record<ProviderId, string>>>;
  /** How long before expiry the scheduler refreshes a token (`REFRESH_LEAD_SECONDS`); unset keeps the code's default. */
  readonly refreshLeadSeconds: number | undefined;
  readonly logRetentionDays: number;
  /** Steady-state requests per second allowed on each public route (burst is twice this). */
  readonly publicRouteRateLimit: number;
  /** Steady-state requests per second allowed on each IAM-authorized route. */
  readonly serviceRouteRateLimit: number;
  /** Alarm when more connections than this newly need re-authorization within an hour. */
  readonly needsReauthAlarmThreshold: number;
  /** An existing SNS topic every alarm notifies; unset leaves alarms without actions. */
  readonly alarmTopicArn: string | undefined;
  /**
   * A CloudTrail trail of who invoked token-fetch (Lambda data events, to an S3
   * bucket in the stateful stack); unset (the default) means no trail.
   */
  readonly tokenFetchAccessTrail: AccessTrail | undefined;
  /** `tableCapacity` and its bounds: on demand unless `provisioned`. */
  readonly tableCapacity: TableCapacity;
  /**
   * `publishRefreshedEvents`: whether a refresh that changes no state still publishes
   * `connection.refreshed` (`PUBLISH_REFRESHED_EVENTS` of the functions that refresh); off by default.
   */
  readonly publishRefreshedEvents: boolean;
}

export type ContextReader = (key: string) => unknown;

/** CloudWatch Logs accepts only these retention periods. */
const RETENTION_DAYS = [
  1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
];

export class SettingsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SettingsError';
  }
}

export const clientIdContextKey = (provider: ProviderId): string => `${provider}ClientId`;
export const workerCapContextKey = (provider: ProviderId): string => `${provider}RefreshWorkerCap`;
export const rateLimitContextKey = (provider: ProviderId): string => `${provider}RateLimit`;

function text(read: ContextReader, key: string): string | undefined {
  const value = read(key);
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string') throw new SettingsError(`context ${key} must be a string`);
  return value.trim();
}

function integer(read: ContextReader, key: string, fallback: number, min: number, max: number): number {
  const value = read(key);
  if (value === undefined || value === null || value === '') return fallback;
  const n = integerIn(typeof value === 'string' ? value.trim() : value, min, max, true);
  if (n === undefined) throw new SettingsError(`context ${key} must be an integer from ${min} to ${max}`);
  return n;
}

/** `true`/`false`, as JSON in cdk.json or as text from `-c key=value`. */
function flag(read: ContextReader, key: string, fallback: boolean): boolean {
  const value = read(key);
  if (value === undefined || value === null || value === '') return fallback;
  if (typeof value === 'boolean') return value;
  if (typeof value === 'string' && /^(true|false)$/.test(value.trim())) return value.trim() === 'true';
  throw new SettingsError(`context ${key} must be true or false`);
}

/**
 * Provisioned capacity bounds. A minimum of 5 units (the console's default) keeps an idle table and its
 * two indexes at about $8.50 a month in us-east-1 (3 x (5 write + 5 read units)); it is also the
 * capacity the table starts with when the setting is switched on, so set it near the steady load of a large deployment
 * (docs/deploy.md), since auto scaling follows a rise only after minutes of higher use. The maximum of
 * 4,000 covers the refresh and fetch load of a million connections at 70% (about 2,000 write units
 * across the table and its indexes, 600 read units: docs/costs.md) with room for peaks, and caps what
 * runaway traffic can cost (4,000 write units are about $1,900 a month). 40,000 is DynamoDB's default
 * quota per table and per index.
 */
const DEFAULT_MIN_CAPACITY = 5;
const DEFAULT_MAX_CAPACITY = 4_000;
const MAX_CAPACITY = 40_000;
/**
 * 20-90% is Application Auto Scaling's range for DynamoDB; 70% (the console's default) leaves 30%
 * headroom for the dispatcher's claims, which come in a burst each minute, while auto scaling catches up.
 */
const DEFAULT_TARGET_UTILIZATION = 70;

function capacityRange(read: ContextReader, kind: 'Write' | 'Read'): CapacityRange {
  const minKey = `tableMin${kind}Capacity`;
  const maxKey = `tableMax${kind}Capacity`;
  const min = integer(read, minKey, DEFAULT_MIN_CAPACITY, 1, MAX_CAPACITY);
  const max = integer(read, maxKey, DEFAULT_MAX_CAPACITY, 1, MAX_CAPACITY);
  if (min > max) throw new SettingsError(`context ${minKey} (${min}) must not exceed ${maxKey} (${max})`);
  return { min, max };
}

/** Bounds are checked in either mode, so a bad value fails before the day provisioned capacity is switched on. */
function tableCapacity(read: ContextReader): TableCapacity {
  const mode = text(read, 'tableCapacity') ?? 'on-demand';
  if (mode !== 'on-demand' && mode !== 'provisioned') {
    throw new SettingsError('context tableCapacity must be on-demand or provisioned');
  }
  const writes = capacityRange(read, 'Write');
  const reads = capacityRange(read, 'Read');
  const targetUtilizationPercent = integer(
    read,
    'tableCapacityTargetUtilization',
    DEFAULT_TARGET_UTILIZATION,
    20,
    90,
  );
  return mode === 'on-demand' ? { mode } : { mode, writes, reads, targetUtilizationPercent };
}

export function readSettings(read: ContextReader): BrokerSettings {
  const prefix = text(read, 'prefix') ?? 'crm-oauth-broker';
  if (!/^[a-z][a-z0-9-]{1,29}$/.test(prefix)) {
    throw new SettingsError('context prefix must be 2-30 characters: lower-case letters, digits and dashes');
  }

  const clientIds: Partial<Record<ProviderId, string>> = {};
  for (const provider of providerIds) {
    const clientId = text(read, clientIdContextKey(provider));
    if (clientId === undefined) continue;
    if (!/^[\x21-\x7e]{1,256}$/.test(clientId)) {
      throw new SettingsError(`context ${clientIdContextKey(provider)} is not a plausible client id`);
    }
    clientIds[provider] = clientId;
  }

  // The same rule the functions apply at cold start (rate-limits.ts), so a bad value fails here instead.
  const crmRateLimits: Partial<Record<ProviderId, string>> = {};
  for (const provider of providerIds) {
    const value = text(read, rateLimitContextKey(provider));
    if (value === undefined) continue;
    const match = /^\s*(\d{1,9})\s*\/\s*(\d{1,9})\s*$/.exec(value);
    if (!match || Number(match[1]) < 1 || Number(match[2]) < 1) {
      throw new SettingsError(
        `context ${rateLimitContextKey(provider)} must be <requests>/<seconds> with both at least 1, e.g. 20/1`,
      );
    }
    crmRateLimits[provider] = `${Number(match[1])}/${Number(match[2])}`;
  }

  const originsRaw = read('returnToOrigins');
  let returnToOrigins: string[] | undefined;
  if (originsRaw !== undefined && originsRaw !== null && originsRaw !== '') {
    const list = Array.isArray(originsRaw) ? originsRaw : String(originsRaw).split(',');
    returnToOrigins = list.map((o) => String(o).trim()).filter(Boolean);
    for (const origin of returnToOrigins) {
      // The same check the functions make at cold start, so a bad value fails here instead.
      if (originOf(origin) !== origin || origin.includes(',')) {
        throw new SettingsError(
          `context returnToOrigins: ${JSON.stringify(origin)} is not an origin like https://app.example.com`,
        );
      }
    }
  }

  const domainName = text(read, 'domainName');
  const certificateArn = text(read, 'certificateArn');
  if ((domainName === undefined) !== (certificateArn === undefined)) {
    throw new SettingsError('context domainName and certificateArn go together');
  }
  if (
    domainName !== undefined &&
    !/^(?=.{4,253}$)([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$/.test(domainName)
  ) {
    throw new SettingsError('context domainName must be a lower-case DNS name');
  }
  if (
    certificateArn !== undefined &&
    !/^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate\/.+$/.test(certificateArn)
  ) {
    throw new SettingsError('context certificateArn must be an ACM certificate ARN');
  }

  const logRetentionDays = integer(read, 'logRetentionDays', 30, 1, 3653);
  if (!RETENTION_DAYS.includes(logRetentionDays)) {
    throw new SettingsError(`context logRetentionDays must be one of ${RETENTION_DAYS.join(', ')}`);
  }
  const alarmTopicArn = text(read, 'alarmTopicArn');
  if (alarmTopicArn !== undefined && !/^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[\w-]+$/.test(alarmTopicArn)) {
    throw new SettingsError('context alarmTopicArn must be an SNS topic ARN');
  }
  const refreshLead = read('refreshLeadSeconds');
  // Checked even while the trail is off, so a bad value fails before the day it is switched on.
  const accessTrailRetentionDays = integer(read, 'tokenFetchAccessTrailRetentionDays', 365, 1, 3653);

  return {
    prefix,
    clientIds,
    returnToOrigins,
    customDomain: domainName && certificateArn ? { domainName, certificateArn } : undefined,
    refreshIntervalMinutes: integer(read, 'refreshIntervalMinutes', 1, 1, 60),
    refreshWorkerCaps: Object.fromEntries(
      providerIds.map((p) => [
        p,
        integer(read, workerCapContextKey(p), DEFAULT_WORKER_CAPS[p], MIN_WORKER_CAP, MAX_WORKER_CAP),
      ]),
    ) as Record<ProviderId, number>,
    crmRateLimits,
    refreshLeadSeconds:
      refreshLead === undefined || refreshLead === null || refreshLead === ''
        ? undefined
        : integer(read, 'refreshLeadSeconds', 900, 60, 86_400),
    logRetentionDays,
    publicRouteRateLimit: integer(read, 'publicRouteRateLimit', 20, 1, 10_000),
    serviceRouteRateLimit: integer(read, 'serviceRouteRateLimit', 50, 1, 10_000),
    needsReauthAlarmThreshold: integer(read, 'needsReauthAlarmThreshold', 10, 1, 100_000),
    alarmTopicArn,
    tokenFetchAccessTrail: flag(read, 'tokenFetchAccessTrail', false)
      ? { retentionDays: accessTrailRetentionDays }
      : undefined,
    tableCapacity: tableCapacity(read),
    publishRefreshedEvents: flag(read, 'publishRefreshedEvents', false),
  };
}
