// Run one scheduled refresh pass now, instead of waiting for the schedule, and print its summary
// ({ due, refreshed, failed, needsReauth, ... }). Only for `npm start`: in AWS the schedule does this.
//
//   node examples/refresh-now.mjs
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';

const lambda = new LambdaClient({
  endpoint: process.env.BROKER_URL ?? 'http://127.0.0.1:3000',
  region: 'us-east-1',
  credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
});
const out = await lambda.send(new InvokeCommand({ FunctionName: 'refresh-scheduled', Payload: '{}' }));
const answer = JSON.parse(new TextDecoder().decode(out.Payload));
if (out.FunctionError) {
  console.error(`refresh-scheduled failed: ${answer.errorType}: ${answer.errorMessage}`);
  process.exit(1);
}
console.log(JSON.stringify(answer));
