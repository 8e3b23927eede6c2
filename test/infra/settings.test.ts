/** Deployment settings are checked before anything is built, with the same rules the functions apply. */
import { describe, expect, it } from 'vitest';
import { SettingsError, readSettings } from '../../infra/settings.ts';

const read = (context: Record<string, unknown>) => readSettings((key) => context[key]);

describe('deployment settings', () => {
  it('has working defaults: no client ids, the broker origin only, a 1-minute schedule, 30-day logs', () => {
    expect(read({})).toEqual({
      prefix: 'crm-oauth-broker',
      clientIds: {},
      returnToOrigins: undefined,
      customDomain: undefined,
      refreshIntervalMinutes: 1,
      refreshWorkerCaps: { copper: 4, capsule: 4, close: 320 },
      crmRateLimits: {},
      refreshLeadSeconds: undefined,
      logRetentionDays: 30,
      publicRouteRateLimit: 20,
      serviceRouteRateLimit: 50,
      needsReauthAlarmThreshold: 10,
      alarmTopicArn: undefined,
      tokenFetchAccessTrail: undefined,
      tableCapacity: { mode: 'on-demand' },
      publishRefreshedEvents: false,
    });
  });

  it('turns connection.refreshed events on from cdk.json (true) or -c (text)', () => {
    expect(read({ publishRefreshedEvents: true }).publishRefreshedEvents).toBe(true);
    expect(read({ publishRefreshedEvents: ' true ' }).publishRefreshedEvents).toBe(true);
    expect(read({ publishRefreshedEvents: 'false' }).publishRefreshedEvents).toBe(false);
  });

  it('provisions the table with auto scaling from 5 to 4,000 units at 70% by default when asked', () => {
    expect(read({ tableCapacity: 'provisioned' }).tableCapacity).toEqual({
      mode: 'provisioned',
      writes: { min: 5, max: 4000 },
      reads: { min: 5, max: 4000 },
      targetUtilizationPercent: 70,
    });
    expect(read({ tableCapacity: ' on-demand ' }).tableCapacity).toEqual({ mode: 'on-demand' });
  });

  it('takes the provisioned bounds and target from cdk.json (numbers) or -c (text)', () => {
    expect(
      read({
        tableCapacity: 'provisioned',
        tableMinWriteCapacity: 150,
        tableMaxWriteCapacity: '2000',
        tableMinReadCapacity: ' 40 ',
        tableMaxReadCapacity: 600,
        tableCapacityTargetUtilization: '80',
      }).tableCapacity,
    ).toEqual({
      mode: 'provisioned',
      writes: { min: 150, max: 2000 },
      reads: { min: 40, max: 600 },
      targetUtilizationPercent: 80,
    });
    // A fixed capacity: minimum and maximum equal.
    expect(
      read({ tableCapacity: 'provisioned', tableMinReadCapacity: 25, tableMaxReadCapacity: 25 })
        .tableCapacity,
    ).toMatchObject({ reads: { min: 25, max: 25 } });
  });

  it("takes each CRM's refresh worker cap from <crm>RefreshWorkerCap, keeping the defaults for the others", () => {
    expect(read({ closeRefreshWorkerCap: 120, capsuleRefreshWorkerCap: ' 6 ' }).refreshWorkerCaps).toEqual({
      copper: 4,
      capsule: 6,
      close: 120,
    });
  });

  it("takes each CRM's API budget from <crm>RateLimit as <requests>/<seconds>", () => {
    expect(read({ closeRateLimit: ' 20 / 1 ', copperRateLimit: '90/60' }).crmRateLimits).toEqual({
      close: '20/1',
      copper: '90/60',
    });
  });

  it('switches the token-fetch access trail on from cdk.json (true) or -c (text), keeping a year by default', () => {
    expect(read({ tokenFetchAccessTrail: true }).tokenFetchAccessTrail).toEqual({ retentionDays: 365 });
    expect(read({ tokenFetchAccessTrail: 'true' }).tokenFetchAccessTrail).toEqual({ retentionDays: 365 });
    expect(
      read({ tokenFetchAccessTrail: ' true ', tokenFetchAccessTrailRetentionDays: '90' })
        .tokenFetchAccessTrail,
    ).toEqual({ retentionDays: 90 });
    expect(read({ tokenFetchAccessTrail: false }).tokenFetchAccessTrail).toBeUndefined();
    expect(read({ tokenFetchAccessTrail: 'false' }).tokenFetchAccessTrail).toBeUndefined();
  });

  it('reads client ids per CRM and origins as a list or comma-separated text', () => {
    const s = read({
      closeClientId: 'oa2client_abc',
      returnToOrigins: 'https://app.example.com, https://admin.example.com:8443',
    });
    expect(s.clientIds).toEqual({ close: 'oa2client_abc' });
    expect(s.returnToOrigins).toEqual(['https://app.example.com', 'https://admin.example.com:8443']);
    expect(read({ returnToOrigins: ['https://app.example.com'] }).returnToOrigins).toEqual([
      'https://app.example.com',
    ]);
  });

  it.each([
    ['https://app.example.com/done', 'a path'],
    ['app.example.com', 'no scheme'],
    ['javascript:alert(1)', 'a script URL'],
    ['https://app.example.com/', 'a trailing slash'],
  ])('refuses the returnTo origin %s (%s), as the functions would at cold start', (origin) => {
    expect(() => read({ returnToOrigins: origin })).toThrow(SettingsError);
  });

  it('takes a custom domain only with its certificate', () => {
    expect(() => read({ domainName: 'crm-auth.example.com' })).toThrow(/go together/);
    expect(() =>
      read({
        domainName: 'crm-auth.example.com',
        certificateArn: 'arn:aws:iam::111111111111:server-certificate/x',
      }),
    ).toThrow(/ACM certificate/);
    expect(
      read({
        domainName: 'crm-auth.example.com',
        certificateArn: 'arn:aws:acm:eu-west-1:111111111111:certificate/abc',
      }).customDomain,
    ).toEqual({
      domainName: 'crm-auth.example.com',
      certificateArn: 'arn:aws:acm:eu-west-1:111111111111:certificate/abc',
    });
  });

  it.each([
    [{ prefix: 'Has Spaces' }, /prefix/],
    [{ refreshIntervalMinutes: '0' }, /refreshIntervalMinutes/],
    [{ closeRefreshWorkerCap: 1 }, /closeRefreshWorkerCap must be an integer from 2 to 10000/],
    [{ copperRefreshWorkerCap: '10001' }, /copperRefreshWorkerCap/],
    [{ capsuleRefreshWorkerCap: 'lots' }, /capsuleRefreshWorkerCap/],
    [{ refreshIntervalMinutes: 90 }, /refreshIntervalMinutes/],
    [{ refreshLeadSeconds: 10 }, /refreshLeadSeconds/],
    [{ closeRateLimit: '0/1' }, /closeRateLimit must be <requests>\/<seconds>/],
    [{ capsuleRateLimit: '4000' }, /capsuleRateLimit/],
    [{ copperRateLimit: '180/0' }, /copperRateLimit/],
    [{ logRetentionDays: 31 }, /logRetentionDays must be one of/],
    [{ alarmTopicArn: 'ops-alarms' }, /SNS topic ARN/],
    [{ copperClientId: 'has space' }, /copperClientId/],
    [{ closeClientId: 42 }, /must be a string/],
    [{ tokenFetchAccessTrail: 'yes' }, /tokenFetchAccessTrail must be true or false/],
    [{ tokenFetchAccessTrail: 1 }, /tokenFetchAccessTrail must be true or false/],
    [{ tokenFetchAccessTrail: true, tokenFetchAccessTrailRetentionDays: 0 }, /RetentionDays/],
    // Checked while the trail is off too: a bad value fails before the day it is switched on.
    [{ tokenFetchAccessTrailRetentionDays: 'a year' }, /tokenFetchAccessTrailRetentionDays/],
    [{ publishRefreshedEvents: 'yes' }, /publishRefreshedEvents must be true or false/],
    [{ publishRefreshedEvents: 1 }, /publishRefreshedEvents must be true or false/],
    [{ tableCapacity: 'PROVISIONED' }, /tableCapacity must be on-demand or provisioned/],
    [{ tableCapacity: 'pay-per-request' }, /tableCapacity must be on-demand or provisioned/],
    [{ tableCapacity: true }, /tableCapacity must be a string/],
    [
      { tableCapacity: 'provisioned', tableMinWriteCapacity: 0 },
      /tableMinWriteCapacity must be an integer from 1 to 40000/,
    ],
    [
      { tableCapacity: 'provisioned', tableMaxReadCapacity: 40_001 },
      /tableMaxReadCapacity must be an integer from 1 to 40000/,
    ],
    [
      { tableCapacity: 'provisioned', tableMaxWriteCapacity: '2.5' },
      /tableMaxWriteCapacity must be an integer/,
    ],
    [
      { tableCapacity: 'provisioned', tableMinWriteCapacity: 500, tableMaxWriteCapacity: 100 },
      /tableMinWriteCapacity \(500\) must not exceed tableMaxWriteCapacity \(100\)/,
    ],
    // The default maximum (4,000) counts when only the minimum is given.
    [
      { tableCapacity: 'provisioned', tableMinReadCapacity: 5000 },
      /tableMinReadCapacity \(5000\) must not exceed tableMaxReadCapacity \(4000\)/,
    ],
    [
      { tableCapacity: 'provisioned', tableCapacityTargetUtilization: 95 },
      /tableCapacityTargetUtilization must be an integer from 20 to 90/,
    ],
    [
      { tableCapacity: 'provisioned', tableCapacityTargetUtilization: '0.7' },
      /tableCapacityTargetUtilization/,
    ],
    // Checked while the table is on demand too: a bad value fails before the day provisioned is switched on.
    [{ tableMaxWriteCapacity: 'lots' }, /tableMaxWriteCapacity/],
    [{ tableMinReadCapacity: 10, tableMaxReadCapacity: 5 }, /tableMinReadCapacity \(10\) must not exceed/],
  ])('refuses %j', (context, message) => {
    expect(() => read(context)).toThrow(message);
  });
});
