/**
 * Builds the broker's CDK app: the stateful and stateless stacks, with cdk-nag's
 * AwsSolutions checks registered so every synthesis is checked. Used by
 * `infra/app.ts` (the CLI's entry) and by the template tests, so both see the
 * same app.
 */
import { App, type AppProps, type Environment, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { type BrokerSettings, readSettings } from './settings.ts';
import { StatefulStack } from './stateful-stack.ts';
import { StatelessStack } from './stateless-stack.ts';

export interface BrokerApp {
  readonly app: App;
  readonly settings: BrokerSettings;
  readonly stateful: StatefulStack;
  readonly stateless: StatelessStack;
}

/**
 * The account and region to deploy to: `-c account=... -c region=...`, else the
 * CLI's current credentials (CDK_DEFAULT_*), else environment-agnostic, which is
 * enough to synthesize offline.
 */
function environment(app: App): Environment {
  const account =
    (app.node.tryGetContext('account') as string | undefined) ?? process.env.CDK_DEFAULT_ACCOUNT;
  const region = (app.node.tryGetContext('region') as string | undefined) ?? process.env.CDK_DEFAULT_REGION;
  return { ...(account ? { account } : {}), ...(region ? { region } : {}) };
}

export function createBrokerApp(props: AppProps = {}): BrokerApp {
  const app = new App(props);
  const settings = readSettings((key) => app.node.tryGetContext(key));
  const env = environment(app);
  const stateful = new StatefulStack(app, 'Stateful', {
    stackName: `${settings.prefix}-stateful`,
    description: 'crm-oauth-broker: table, token key, CRM client secrets, event bus (retained on delete)',
    env,
    settings,
    terminationProtection: true,
  });
  const stateless = new StatelessStack(app, 'Stateless', {
    stackName: `${settings.prefix}-stateless`,
    description: 'crm-oauth-broker: functions, HTTP API, refresh schedule, alarms, dashboard',
    env,
    settings,
    table: stateful.table,
    tokenKey: stateful.tokenKey,
    clientSecrets: stateful.clientSecrets,
    eventBus: stateful.eventBus,
  });
  stateless.addStackDependency(stateful);
  Validations.of(app).addPlugins(
    new AwsSolutionsChecks(app, { verbose: true, writeSuppressionsToCloudFormation: true }),
  );
  return { app, settings, stateful, stateless };
}
