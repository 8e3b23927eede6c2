// Calls the CRM behind a connection through the client library (@crm-oauth-broker/client): fetches a
// token (cached: one token-fetch per token lifetime) and the identity of the person who connected.
//
//   npm start                                          # in another terminal; connect a CRM on http://localhost:3000/
//   node examples/client-quick-start.mjs conn_…
//
// BROKER_URL points it at another port (http://127.0.0.1:3001), OWNER_ID at another owner than the
// demo page's demo-owner. Against AWS set BROKER_URL= (empty): the client then uses AWS's endpoint,
// your credentials and AWS_REGION, and the deployed names (crm-oauth-broker-token-fetch).
import { ConnectionNotFound, NeedsReauth, createBrokerClient } from '@crm-oauth-broker/client';

const connectionId = process.argv[2];
const ownerId = process.env.OWNER_ID ?? 'demo-owner';
if (!connectionId) {
  console.error(
    'usage: node examples/client-quick-start.mjs <connectionId>   (copy one from http://localhost:3000/)',
  );
  process.exit(2);
}

const endpoint = process.env.BROKER_URL ?? 'http://127.0.0.1:3000';
const broker = createBrokerClient(endpoint ? { endpoint } : {});

/** Each CRM's "who am I" call, relative to its API base. */
const identityPath = { close: '/me/', copper: '/account', capsule: '/users/current' };

try {
  const token = await broker.getToken(connectionId, { ownerId });
  console.log(
    `${token.provider} connection ${connectionId}, token valid until ${token.expiresAt ?? 'revoked'}`,
  );

  const path = identityPath[token.provider];
  const res = await broker.fetch(connectionId, path, { ownerId, headers: { Accept: 'application/json' } });
  console.log(`GET ${token.apiBaseUrl}${path} -> ${res.status}`);
  console.log(JSON.stringify(await res.json(), null, 2));
  process.exitCode = res.ok ? 0 : 1;
} catch (err) {
  if (err instanceof ConnectionNotFound) console.error(`No connection ${connectionId} for owner ${ownerId}.`);
  else if (err instanceof NeedsReauth)
    console.error('The CRM rejected the grant: connect again on the demo page.');
  else console.error(`${err.name}: ${err.message}`);
  process.exitCode = 1;
} finally {
  broker.destroy();
}
