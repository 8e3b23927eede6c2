/**
 * security.md row 22: a web page must not read or delete tokens through the local server. The Lambda
 * Invoke API and the IAM routes (`POST /connections/{connectionId}/refresh`) answer only requests
 * addressed to the loopback host with this server's port that no browser marks as another site
 * (local/loopback-guard.ts); everything else gets 403 and has no effect: the handler never runs, the
 * table, the events and the sandbox CRMs see nothing. The browser routes `/connect` and `/callback`
 * stay open cross-site, since CRMs send browsers there from their own sites.
 *
 * Requests go out through `node:http`, which sends the `Host`, `Origin` and `Sec-Fetch-Site` it is given.
 */
import { request } from 'node:http';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Context } from 'aws-lambda';
import { refusalReasons } from '../../local/loopback-guard.ts';
import { type FunctionName, functionNames, invokableFunctions } from '../../manifest/functions.ts';
import { Browser } from '../support/browser.ts';
import { connect, returnToOf, startConnect } from '../support/flows.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';

let broker: TestBroker;
let port: number;
/** A connection at the Close sandbox, whose tokens the hostile requests go after. */
let connectionId: string;
/** How often each function's handler ran (the server calls them through `server.handlers`). */
const runs = Object.fromEntries(functionNames.map((name) => [name, 0])) as Record<FunctionName, number>;

beforeAll(async () => {
  broker = await startTestBroker();
  port = broker.server.port;
  const handlers = broker.server.handlers as Record<FunctionName, (e: unknown, c: Context) => unknown>;
  for (const name of functionNames) {
    const handler = handlers[name];
    handlers[name] = (event, context) => {
      runs[name] += 1;
      return handler(event, context);
    };
  }
  const connected = await connect(broker, 'close', { ownerId: 'owner-guard' });
  expect(connected.final.searchParams.get('status')).toBe('connected');
  connectionId = connected.connectionId as string;
});
afterAll(async () => broker?.close());
// Each test starts with the connection in place, so one defence that fails does not fail the rest.
beforeEach(async () => {
  const got = await broker.invoke('connections', { action: 'get', connectionId });
  if (!got.ok)
    connectionId = (await connect(broker, 'close', { ownerId: 'owner-guard' })).connectionId as string;
});
afterEach(() => {
  vi.restoreAllMocks();
});

interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A POST to the local server (at 127.0.0.1) with exactly these headers; `host: null` sends no Host. */
function rawPost(path: string, headers: Record<string, string | null>, body = ''): Promise<RawAnswer> {
  const sent: Record<string, string> = { 'content-type': 'application/json' };
  for (const [name, value] of Object.entries(headers)) if (value !== null) sent[name] = value;
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'POST',
        headers: sent,
        setHost: !('host' in headers),
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const invokePath = (name: string) => `/2015-03-31/functions/${encodeURIComponent(name)}/invocations`;
const refreshPath = () => `/connections/${connectionId}/refresh`;

/** Everything a request could change: the table, the events, the sandbox CRMs' counters, handler runs. */
async function observable() {
  return {
    items: await broker.scan(),
    events: broker.server.events.events.length,
    sandbox: broker.server.sandbox.calls(),
    runs: { ...runs },
  };
}

/** What each service endpoint is asked by the hostile page: the most harmful thing it can do. */
const targets: { name: string; path: () => string; body: () => unknown; invoke: boolean }[] = [
  ...invokableFunctions.map((name) => ({
    name: `Invoke ${name}`,
    path: () => invokePath(name),
    invoke: true,
    body: () =>
      ({
        'connect-session': { ownerId: 'owner-guard', provider: 'close', returnTo: returnToOf(broker) },
        'token-fetch': { connectionId },
        connections: { action: 'delete', connectionId },
        refresh: { connectionId },
        'refresh-scheduled': {},
      })[name as string] ?? { connectionId },
  })),
  { name: 'POST /connections/{connectionId}/refresh', path: refreshPath, invoke: false, body: () => '' },
];

/** The hostile requests: what a DNS-rebound or cross-site page makes a browser send (or close to it). */
const hostile: { name: string; headers: () => Record<string, string | null>; reason: string }[] = [
  { name: 'Host: rebind.example', headers: () => ({ host: 'rebind.example' }), reason: refusalReasons.host },
  {
    name: 'Host: rebind.example:<port> (DNS rebinding, same-origin to the page)',
    headers: () => ({
      host: `rebind.example:${port}`,
      origin: `http://rebind.example:${port}`,
      'sec-fetch-site': 'same-origin',
    }),
    reason: refusalReasons.host,
  },
  {
    name: 'Host: localhost:<other port>',
    headers: () => ({ host: `localhost:${port + 1}` }),
    reason: refusalReasons.host,
  },
  { name: 'Host: 127.0.0.1 (no port)', headers: () => ({ host: '127.0.0.1' }), reason: refusalReasons.host },
  {
    name: 'Origin: https://evil.example',
    headers: () => ({ origin: 'https://evil.example' }),
    reason: refusalReasons.origin,
  },
  { name: 'Origin: null', headers: () => ({ origin: 'null' }), reason: refusalReasons.origin },
  {
    name: 'Origin: http://localhost:<other port>',
    headers: () => ({ origin: `http://localhost:${port + 1}` }),
    reason: refusalReasons.origin,
  },
  {
    name: 'Sec-Fetch-Site: cross-site',
    headers: () => ({ 'sec-fetch-site': 'cross-site' }),
    reason: refusalReasons.fetchSite,
  },
  {
    name: 'Sec-Fetch-Site: same-site',
    headers: () => ({ 'sec-fetch-site': 'same-site' }),
    reason: refusalReasons.fetchSite,
  },
];

describe.each(targets)('row 22: $name refuses a hostile request with 403 and no effect', (target) => {
  it.each(hostile)('$name', async (attack) => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const before = await observable();
    const sent = attack.headers();
    const answer = await rawPost(target.path(), sent, JSON.stringify(target.body()));

    expect(answer.status).toBe(403);
    expect(JSON.parse(answer.body)).toEqual(
      target.invoke ? { Type: 'User', message: attack.reason } : { message: attack.reason },
    );
    if (target.invoke) expect(answer.headers['x-amzn-errortype']).toBe('AccessDeniedException');
    // No effect: no handler ran, nothing stored, deleted, published or sent to the CRM, no token out.
    expect(await observable()).toEqual(before);
    expect(answer.body).not.toMatch(/token|connectUrl/i);
    const got = await broker.invoke('connections', { action: 'get', connectionId });
    expect(got).toMatchObject({ ok: true, value: { connectionId, status: 'active' } });
    // Logged once, with the reason and no header value.
    expect(warn).toHaveBeenCalledTimes(1);
    const line = warn.mock.calls.flat().map(String).join(' ');
    expect(line).toContain(attack.reason);
    for (const value of Object.values(sent)) if (value) expect(line).not.toContain(value);
  });
});

describe('row 22: the refusal comes before anything else the Invoke API says', () => {
  it('a DNS-rebound page cannot even learn which functions exist', async () => {
    vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const answer = await rawPost(invokePath('no-such-function'), { host: `rebind.example:${port}` }, '{}');
    expect(answer.status).toBe(403);
    const ours = await rawPost(invokePath('no-such-function'), {}, '{}');
    expect(ours.status).toBe(404);
  });

  it('a request with no Host at all never reaches a handler (Node answers 400 itself)', async () => {
    const before = await observable();
    for (const path of [invokePath('connections'), refreshPath()]) {
      const answer = await rawPost(path, { host: null }, JSON.stringify({ action: 'delete', connectionId }));
      expect([400, 403]).toContain(answer.status);
    }
    expect(await observable()).toEqual(before);
  });
});

describe('row 22: loopback callers keep working', () => {
  const client = (endpoint: string) =>
    new LambdaClient({
      endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
      maxAttempts: 1,
    });

  it.each(['127.0.0.1', 'localhost'])(
    '@aws-sdk/client-lambda at http://%s:<port> (the README quick start)',
    async (hostname) => {
      const lambda = client(`http://${hostname}:${port}`);
      try {
        const out = await lambda.send(
          new InvokeCommand({
            FunctionName: 'token-fetch',
            Payload: Buffer.from(JSON.stringify({ connectionId })),
          }),
        );
        expect(out.StatusCode).toBe(200);
        expect(out.FunctionError).toBeUndefined();
        const token = JSON.parse(Buffer.from(out.Payload ?? []).toString('utf8'));
        expect(token).toMatchObject({ connectionId, provider: 'close', accessToken: expect.any(String) });
        // A full ARN with a qualifier, as the SDK also sends it.
        const arn = await lambda.send(
          new InvokeCommand({
            FunctionName: 'arn:aws:lambda:us-east-1:000000000000:function:connections:$LATEST',
            Payload: Buffer.from(JSON.stringify({ action: 'list', ownerId: 'owner-guard' })),
          }),
        );
        expect(arn.FunctionError).toBeUndefined();
      } finally {
        lambda.destroy();
      }
    },
  );

  it.each([
    ['Host: [::1]:<port>', () => ({ host: `[::1]:${port}` })],
    [
      'the broker’s own page: Origin http://localhost:<port>, Sec-Fetch-Site: same-origin',
      () => ({
        host: `localhost:${port}`,
        origin: `http://localhost:${port}`,
        'sec-fetch-site': 'same-origin',
      }),
    ],
    ['Sec-Fetch-Site: none (typed in the address bar)', () => ({ 'sec-fetch-site': 'none' })],
  ] as const)('%s', async (_name, headers) => {
    const ran = runs.connections;
    const answer = await rawPost(
      invokePath('connections'),
      headers(),
      JSON.stringify({ action: 'get', connectionId }),
    );
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.body)).toMatchObject({ connectionId, status: 'active' });
    expect(runs.connections).toBe(ran + 1);
  });

  it('the refresh route from a loopback client without Origin', async () => {
    const refreshes = broker.server.sandbox.calls().close?.['token:refresh_token'] ?? 0;
    const answer = await rawPost(refreshPath(), {});
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.body)).toMatchObject({ connectionId });
    expect(broker.server.sandbox.calls().close?.['token:refresh_token']).toBe(refreshes + 1);
  });
});

describe('row 22: the browser routes stay open cross-site', () => {
  const crossSite = { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate' };

  it('/connect and /callback complete a flow whose every broker request is cross-site', async () => {
    const browser = new Browser();
    const { connectUrl } = await startConnect(broker, 'close', 'owner-guard-xs');
    const authorize = await fetch(connectUrl, { redirect: 'manual', headers: crossSite });
    expect(authorize.status).toBe(302);
    for (const line of authorize.headers.getSetCookie()) {
      const [pair = ''] = line.split(';');
      const eq = pair.indexOf('=');
      browser.cookies.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
    const consentPage = await browser.follow({
      url: connectUrl,
      status: authorize.status,
      headers: authorize.headers,
      body: '',
    });
    expect(consentPage.status).toBe(200);
    const callbackBase = `${broker.server.deps.config.publicBaseUrl}/callback/close`;
    const toCallback = await browser.follow(await browser.submit(consentPage, /allow/i), (url) =>
      url.startsWith(callbackBase),
    );
    expect(toCallback.url.startsWith(callbackBase)).toBe(true);
    const callback = await fetch(toCallback.url, {
      redirect: 'manual',
      headers: { ...crossSite, cookie: browser.cookieHeader() ?? '' },
    });
    expect(callback.status).toBe(302);
    const final = new URL(callback.headers.get('location') ?? '');
    expect(final.origin + final.pathname).toBe(returnToOf(broker));
    expect(final.searchParams.get('status')).toBe('connected');
  });

  it('a cross-site POST to /callback reaches the callback handler (no 403)', async () => {
    const callbacks = runs.callback;
    const answer = await rawPost(
      '/callback/copper',
      {
        host: 'rebind.example',
        origin: 'null',
        'sec-fetch-site': 'cross-site',
        'content-type': 'application/x-www-form-urlencoded',
      },
      'state=forged&code=forged',
    );
    expect(answer.status).not.toBe(403);
    expect(runs.callback).toBe(callbacks + 1);
  });
});

describe("row 22: the demo page's actions also need a Host of ours", () => {
  // The demo page's own check lets `Origin: null` through (its forms send that under no-referrer);
  // a DNS-rebound page sends the same, with `Sec-Fetch-Site: same-origin`.
  const demoDelete = (host: string, id: string) =>
    rawPost(
      '/demo/delete',
      {
        host,
        origin: 'null',
        'sec-fetch-site': 'same-origin',
        'content-type': 'application/x-www-form-urlencoded',
      },
      new URLSearchParams({ connectionId: id }).toString(),
    );

  it('a DNS-rebound page cannot delete through POST /demo/delete', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const before = await observable();
    const answer = await demoDelete(`rebind.example:${port}`, connectionId);
    expect(answer.status).toBe(403);
    expect(await observable()).toEqual(before);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0])).toContain(refusalReasons.host);
  });

  it('the page itself, at localhost:<port>, still deletes', async () => {
    const { connectionId: doomed } = await connect(broker, 'close', { ownerId: 'owner-guard-demo' });
    const answer = await demoDelete(`localhost:${port}`, doomed as string);
    expect(answer.status).toBe(303);
    expect(await broker.invoke('connections', { action: 'get', connectionId: doomed })).toMatchObject({
      ok: false,
      errorType: 'ConnectionNotFound',
    });
  });
});
