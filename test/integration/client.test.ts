/**
 * The client library against a real local broker and its sandbox CRMs: tokens for each CRM, cached
 * (one token-fetch per token lifetime, one in flight), direct calls to each CRM's identity path, a
 * revoked access token answered by one refresh and one retry (one refresh for many callers), a dead
 * Copper token reported as NeedsReauth, owner isolation, and calls through crm-request.
 */
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type BrokerClient,
  ConnectionNotFound,
  InvalidRequest,
  NeedsReauth,
  createBrokerClient,
} from '@crm-oauth-broker/client';
import { crms } from '../../local/sandbox/crms.ts';
import { connect } from '../support/flows.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';

const OWNER = 'user-42';
const providers = ['close', 'copper', 'capsule'] as const;
type Provider = (typeof providers)[number];

/** Each CRM's identity path and a field of its sandbox answer that says who connected. */
const identity: Record<Provider, { path: string; who: (body: any) => unknown; expected: unknown }> = {
  close: { path: '/me/', who: (b) => b.email, expected: 'sam@close-sandbox.example' },
  copper: { path: '/account', who: (b) => b.name, expected: 'Sandbox Copper Co' },
  capsule: { path: '/users/current', who: (b) => b.user?.name, expected: 'Sam Sandbox' },
};

let broker: TestBroker;
const connections = {} as Record<Provider, string>;
/** Invocations per function name that reached the broker from the clients below. */
let invocations: Record<string, number> = {};

/** A Lambda client for the test broker that counts the invocations it sends. */
function countingLambda(): LambdaClient {
  const lambda = new LambdaClient({
    endpoint: broker.server.url,
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    maxAttempts: 1,
  });
  lambda.middlewareStack.add(
    (next) => async (args) => {
      const name = String((args.input as { FunctionName?: string }).FunctionName);
      invocations[name] = (invocations[name] ?? 0) + 1;
      return next(args);
    },
    { step: 'initialize', name: 'countInvocations' },
  );
  return lambda;
}

const clients: BrokerClient[] = [];
const newClient = (): BrokerClient => {
  const client = createBrokerClient({ lambda: countingLambda() });
  clients.push(client);
  return client;
};
const tokenFetches = () => invocations['crm-oauth-broker-token-fetch'] ?? 0;
const sandboxCalls = (provider: Provider, endpoint: string) =>
  broker.server.sandbox.calls()[provider]?.[endpoint] ?? 0;

/** Revokes one access token at the sandbox CRM's RFC 7009 endpoint (the refresh token stays valid). */
async function revokeAccessToken(provider: 'close' | 'capsule', accessToken: string) {
  const crm = crms[provider];
  const res = await fetch(`${broker.server.url}/sandbox${crm.revoke!.path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      token: accessToken,
      client_id: crm.client.id,
      client_secret: crm.client.secret,
    }),
  });
  expect(res.status).toBe(200);
}

beforeAll(async () => {
  broker = await startTestBroker();
  for (const provider of providers) {
    const { final, connectionId } = await connect(broker, provider, { ownerId: OWNER });
    expect(final.searchParams.get('status')).toBe('connected');
    connections[provider] = connectionId as string;
  }
});

afterAll(async () => {
  for (const client of clients) client.destroy();
  await broker?.close();
});

describe.each(providers)('%s through the client library', (provider) => {
  it('getToken returns the token, API base and headers; repeated and concurrent calls cost one token-fetch', async () => {
    invocations = {};
    const client = newClient();
    const token = await client.getToken(connections[provider], { ownerId: OWNER });
    expect(token).toMatchObject({ connectionId: connections[provider], provider, tokenType: 'Bearer' });
    expect(token.apiBaseUrl).toBe(
      `${broker.server.url.replace('127.0.0.1', 'localhost')}/sandbox${crms[provider].paths.apiBase}`,
    );
    expect(token.headers.Authorization).toBe(`Bearer ${token.accessToken}`);
    expect(token.expiresAt === null).toBe(provider === 'copper');

    const again = await Promise.all(
      Array.from({ length: 50 }, () => client.getToken(connections[provider], { ownerId: OWNER })),
    );
    expect(again.every((t) => t.accessToken === token.accessToken)).toBe(true);
    expect(tokenFetches()).toBe(1);
  });

  it(`fetch calls ${identity[provider].path} at the CRM with the token`, async () => {
    const client = newClient();
    const before = sandboxCalls(provider, 'identity');
    const res = await client.fetch(connections[provider], identity[provider].path, { ownerId: OWNER });
    expect(res.status).toBe(200);
    expect(identity[provider].who(await res.json())).toBe(identity[provider].expected);
    expect(sandboxCalls(provider, 'identity')).toBe(before + 1);
  });

  it('another owner gets ConnectionNotFound and no token', async () => {
    const client = newClient();
    await expect(client.getToken(connections[provider], { ownerId: 'someone-else' })).rejects.toBeInstanceOf(
      ConnectionNotFound,
    );
    await expect(
      client.fetch(connections[provider], identity[provider].path, { ownerId: 'someone-else' }),
    ).rejects.toBeInstanceOf(ConnectionNotFound);
  });
});

describe('a path that would leave the API base', () => {
  it('is refused before any invocation or CRM call', async () => {
    invocations = {};
    const client = newClient();
    const before = sandboxCalls('close', 'identity');
    for (const path of [
      '//evil.example/me/',
      '/../../callback/close',
      '/%2e%2e/oauth2/token/',
      '/me/@evil',
    ]) {
      await expect(client.fetch(connections.close, path, { ownerId: OWNER })).rejects.toBeInstanceOf(
        InvalidRequest,
      );
    }
    expect(invocations).toEqual({});
    expect(sandboxCalls('close', 'identity')).toBe(before);
  });
});

describe.each(['close', 'capsule'] as const)('%s: a revoked access token', (provider) => {
  it('is answered by one refresh and one retry, for 20 callers at once', async () => {
    const client = newClient();
    const rejected = await client.getToken(connections[provider], { ownerId: OWNER });
    await revokeAccessToken(provider, rejected.accessToken);
    const refreshesBefore = sandboxCalls(provider, 'token:refresh_token');
    const identityBefore = sandboxCalls(provider, 'identity');
    invocations = {};

    const answers = await Promise.all(
      Array.from({ length: 20 }, () =>
        client.fetch(connections[provider], identity[provider].path, { ownerId: OWNER }),
      ),
    );

    expect(answers.map((r) => r.status)).toEqual(Array(20).fill(200));
    expect(sandboxCalls(provider, 'token:refresh_token')).toBe(refreshesBefore + 1);
    expect(tokenFetches()).toBe(1);
    // 20 first attempts with the revoked token, 20 retries with the new one.
    expect(sandboxCalls(provider, 'identity')).toBe(identityBefore + 40);
    const current = await client.getToken(connections[provider], { ownerId: OWNER });
    expect(current.accessToken).not.toBe(rejected.accessToken);
    expect(tokenFetches()).toBe(1);
  });

  it('seen by two clients (two processes) still causes one refresh', async () => {
    const [a, b] = [newClient(), newClient()];
    const rejected = await a.getToken(connections[provider], { ownerId: OWNER });
    expect((await b.getToken(connections[provider], { ownerId: OWNER })).accessToken).toBe(
      rejected.accessToken,
    );
    await revokeAccessToken(provider, rejected.accessToken);
    const refreshesBefore = sandboxCalls(provider, 'token:refresh_token');

    const answers = await Promise.all(
      [a, b, a, b].map((c) => c.fetch(connections[provider], identity[provider].path, { ownerId: OWNER })),
    );
    expect(answers.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    expect(sandboxCalls(provider, 'token:refresh_token')).toBe(refreshesBefore + 1);
  });
});

describe('request through crm-request', () => {
  it.each(providers)('%s: the identity path through the broker', async (provider) => {
    const client = newClient();
    const answer = await client.request(connections[provider], {
      ownerId: OWNER,
      method: 'GET',
      path: identity[provider].path,
      headers: { Accept: 'application/json' },
    });
    expect(answer.status).toBe(200);
    expect(answer.bodyEncoding).toBe('json');
    expect(identity[provider].who(answer.body)).toBe(identity[provider].expected);
    expect(answer.retryAfterSeconds).toBeNull();
  });

  it('refuses a path that leaves the API base with InvalidRequest', async () => {
    const client = newClient();
    const before = sandboxCalls('close', 'identity');
    await expect(
      client.request(connections.close, { ownerId: OWNER, path: '/../oauth2/token/' }),
    ).rejects.toBeInstanceOf(InvalidRequest);
    expect(sandboxCalls('close', 'identity')).toBe(before);
  });
});

// Last: revoking Copper's grant ends the Copper connection for the rest of the file.
describe('copper: a token the CRM no longer accepts', () => {
  it('is verified by the broker and reported as NeedsReauth', async () => {
    const client = newClient();
    await client.getToken(connections.copper, { ownerId: OWNER });
    broker.server.sandbox.revokeAll('copper');

    await expect(
      client.fetch(connections.copper, identity.copper.path, { ownerId: OWNER }),
    ).rejects.toBeInstanceOf(NeedsReauth);
    // The dead token left the cache: the next call asks the broker again, which says the same.
    await expect(client.getToken(connections.copper, { ownerId: OWNER })).rejects.toBeInstanceOf(NeedsReauth);
  });
});

describe('the local server takes the client’s default (deployed) function names', () => {
  it('crm-oauth-broker-token-fetch is token-fetch', async () => {
    const lambda = countingLambda();
    const out = await lambda.send(
      new InvokeCommand({
        FunctionName: 'crm-oauth-broker-token-fetch',
        Payload: JSON.stringify({ connectionId: connections.close, ownerId: OWNER }),
      }),
    );
    lambda.destroy();
    expect(out.FunctionError).toBeUndefined();
  });
});
