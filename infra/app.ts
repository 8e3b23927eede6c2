/** The CDK CLI's entry (`cdk.json`): `npm run synth`, `npx cdk deploy --all`. */
import { createBrokerApp } from './broker-app.ts';

createBrokerApp().app.synth();
