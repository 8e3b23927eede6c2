// Quick start for Capsule CRM: fetch a token for a connection from the broker and call Capsule CRM's
// "who am I" endpoint with it. Plain JavaScript; needs only `npm install @aws-sdk/client-lambda`.
//
//   node examples/capsule.mjs conn_…            # against `npm start` on http://127.0.0.1:3000
//   BROKER_URL=http://127.0.0.1:3001 node examples/capsule.mjs conn_…
//
// In AWS, drop `endpoint` and `credentials` (the SDK finds your role) and use the deployed name,
// `crm-oauth-broker-token-fetch`; the local server accepts that name too.
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';

const connectionId = process.argv[2];
if (!connectionId) {
  console.error('usage: node capsule.mjs <connectionId>   (copy one from http://localhost:3000/)');
  process.exit(2);
}

const lambda = new LambdaClient({
  endpoint: process.env.BROKER_URL ?? 'http://127.0.0.1:3000',
  region: 'us-east-1',
  credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
});

const out = await lambda.send(
  new InvokeCommand({
    FunctionName: 'token-fetch',
    // ownerId: the tenant this call acts for. With it, a wrong id can never reach another tenant's
    // token (the answer is ConnectionNotFound). The local demo page connects as `demo-owner`.
    Payload: JSON.stringify({ connectionId, ownerId: process.env.OWNER_ID ?? 'demo-owner' }),
  }),
);
const answer = JSON.parse(new TextDecoder().decode(out.Payload));
if (out.FunctionError) {
  // errorType: InvalidRequest | ConnectionNotFound | NeedsReauth | ProviderUnavailable | BrokerUnavailable
  console.error(`token-fetch failed: ${answer.errorType}: ${answer.errorMessage}`);
  process.exit(1);
}
if (answer.provider !== 'capsule') {
  console.error(`${connectionId} is a ${answer.provider} connection; use examples/${answer.provider}.mjs`);
  process.exit(1);
}
console.log(
  `token for ${answer.provider}, expires ${answer.expiresAt ?? 'never'}, API at ${answer.apiBaseUrl}`,
);

// Capsule CRM's identity endpoint, relative to apiBaseUrl. `headers` carries the Authorization header
// and whatever else Capsule CRM requires on every request.
const res = await fetch(`${answer.apiBaseUrl}/users/current`, { headers: answer.headers });
console.log(`GET /users/current -> ${res.status}`);
console.log(JSON.stringify(await res.json(), null, 2));
if (!res.ok) process.exit(1);
