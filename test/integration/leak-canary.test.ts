/**
 * security.md row 8: run every flow (connect, fetch, refresh, failure, delete)
 * and search every log line, broker response header and body, event and stored
 * item for the secrets that went by: codes, tokens, states, cookies, sessions,
 * client secrets. None may appear, except where the contract puts them (the
 * access token in `token-fetch`'s answer; the state in the redirect to the CRM;
 * the cookie in its own Set-Cookie). `crm-request` calls (a query, a header, a
 * body and path values of the caller's, a refused path, a 401) add their own
 * canaries: nothing the caller sends, and no token, reaches a log line.
 */
import { Logger } from '@aws-lambda-powertools/logger';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packTokens } from '../../functions/adapters/dynamodb/token-attribute.ts';
import { decryptTokens } from '../../functions/core/use-cases/fetch-token.ts';
import type { Page } from '../support/browser.ts';
import { connect } from '../support/flows.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';
import { storedItemsText } from '../support/stored-items.ts';

let broker: TestBroker;
const logLines: string[] = [];
const realWrite = process.stdout.write.bind(process.stdout);
const realErrWrite = process.stderr.write.bind(process.stderr);

beforeAll(async () => {
  const capture =
    (sink: typeof realWrite) =>
    (chunk: unknown, ...rest: unknown[]): boolean => {
      logLines.push(String(chunk));
      return (sink as (...a: unknown[]) => boolean)(chunk, ...rest);
    };
  process.stdout.write = capture(realWrite) as typeof process.stdout.write;
  process.stderr.write = capture(realErrWrite) as typeof process.stderr.write;
  broker = await startTestBroker({
    overrides: { logger: new Logger({ serviceName: 'crm-oauth-broker', logLevel: 'DEBUG' }) },
  });
});
afterAll(async () => {
  process.stdout.write = realWrite;
  process.stderr.write = realErrWrite;
  await broker?.close();
});

describe('leak canary', () => {
  it('no secret of any flow appears in logs, broker responses, events or stored items', async () => {
    const pages: Page[] = [];
    const tokens: string[] = [];
    const ids: Record<string, string> = {};
    for (const provider of ['copper', 'capsule', 'close'] as const) {
      const { browser, connectionId } = await connect(broker, provider, {
        ownerId: 'owner-canary',
        crossSitePost: provider === 'copper',
      });
      ids[provider] = connectionId as string;
      pages.push(...browser.history);
      browser.cookies.forEach((value) => tokens.push(value));
    }
    // Fetch, refresh, fail, delete.
    for (const id of Object.values(ids)) {
      const stored = await decryptTokens(
        broker.server.deps,
        (await broker.server.deps.store.getConnection(id))!,
      );
      tokens.push(stored.accessToken, ...(stored.refreshToken ? [stored.refreshToken] : []));
      const fetched = await broker.invoke('token-fetch', { connectionId: id, forceRefresh: true });
      expect(fetched.ok).toBe(true);
      tokens.push((fetched as { value: any }).value.accessToken);
      const after = await decryptTokens(
        broker.server.deps,
        (await broker.server.deps.store.getConnection(id))!,
      );
      tokens.push(after.accessToken, ...(after.refreshToken ? [after.refreshToken] : []));
    }
    // crm-request (security.md row 23 and row 8): query values, a header and a body of the caller's, and
    // the tokens it sends, appear in no log line; its answers carry the CRM's body, never a token.
    const callerSecrets = {
      query: `query-canary-${crypto.randomUUID()}`,
      header: `header-canary-${crypto.randomUUID()}`,
      body: `body-canary-${crypto.randomUUID()}`,
      path: `path-canary-${crypto.randomUUID()}`,
    };
    const crmAnswers: unknown[] = [];
    const identityPaths = { copper: '/account', capsule: '/users/current', close: '/me/' } as const;
    for (const [provider, id] of Object.entries(ids)) {
      const path = identityPaths[provider as keyof typeof identityPaths];
      for (const fields of [
        { path, query: { q: callerSecrets.query }, headers: { 'X-Canary': callerSecrets.header } },
        { method: 'POST', path, body: { secret: callerSecrets.body } },
        { path: `/search/${callerSecrets.path}/` },
        { path: `/../${callerSecrets.path}` },
      ]) {
        const out = await broker.invoke('crm-request', {
          connectionId: id,
          ownerId: 'owner-canary',
          ...fields,
        });
        crmAnswers.push(out);
      }
    }
    expect(crmAnswers.filter((a) => (a as { ok: boolean }).ok)).toHaveLength(9);
    broker.server.sandbox.revokeAll('close');
    // A 401 at the CRM: the refresh that follows finds the grant dead.
    expect(
      await broker.invoke('crm-request', { connectionId: ids.close, ownerId: 'owner-canary', path: '/me/' }),
    ).toMatchObject({ ok: false, errorType: 'NeedsReauth' });
    expect(await broker.invoke('token-fetch', { connectionId: ids.close, forceRefresh: true })).toMatchObject(
      {
        ok: false,
        errorType: 'NeedsReauth',
      },
    );
    expect(await broker.invoke('connections', { action: 'delete', connectionId: ids.capsule })).toMatchObject(
      {
        ok: true,
      },
    );

    // What went by: codes and states from the CRM's redirects, sessions from connect URLs, client secrets.
    const flowSecrets: string[] = [];
    for (const page of pages) {
      for (const url of [page.url, page.headers.get('location') ?? '']) {
        if (!url) continue;
        const u = new URL(url, 'http://x');
        for (const key of ['code', 'state', 'session', 'code_challenge']) {
          const v = u.searchParams.get(key);
          if (v) flowSecrets.push(v);
        }
      }
      for (const m of page.body.matchAll(/name="(?:code|state)" value="([^"]+)"/g))
        flowSecrets.push(m[1] as string);
    }
    const clientSecrets = Object.entries(broker.server.deps.config.clients).map(
      ([p]) => `sandbox-${p}-secret`,
    );
    const canaries = [
      ...new Set([...tokens, ...flowSecrets, ...clientSecrets, ...Object.values(callerSecrets)]),
    ].filter((c) => c.length >= 16);
    expect(canaries.length).toBeGreaterThan(20);

    // Stored items hold tokens in Binary: searched as their bytes and their envelope text, which would show
    // a plaintext token held there (JSON.stringify alone writes a Uint8Array as numbers).
    const canary = canaries[0] as string;
    expect(storedItemsText([{ tokens: packTokens(JSON.stringify({ accessToken: canary })) }])).toContain(
      canary,
    );
    const haystacks: [string, string][] = [
      ['logs', logLines.join('\n')],
      ['events', JSON.stringify(broker.server.events.events)],
      ['stored items', storedItemsText(await broker.scan())],
    ];
    // The CRM's answers go back to the caller as they are; no token of ours is in them.
    const answersText = JSON.stringify(crmAnswers);
    for (const token of tokens.filter((t) => t.length >= 16)) {
      expect(answersText.includes(token), 'a token appears in a crm-request answer').toBe(false);
    }
    for (const page of pages) {
      const path = new URL(page.url).pathname;
      if (path.startsWith('/sandbox/')) continue; // the CRM's own pages
      const headers: string[] = [];
      page.headers.forEach((v, k) => {
        // By contract: /connect sends the state to the CRM and sets the binding cookie.
        if (path.startsWith('/connect/') && (k === 'location' || k === 'set-cookie')) return;
        headers.push(`${k}: ${v}`);
      });
      // By design: the bounce page re-posts Copper's answer (code, state) to the broker itself.
      const body = page.body.includes('Finishing the connection') ? '' : page.body;
      haystacks.push([`${page.status} ${path}`, `${headers.join('\n')}\n${body}`]);
    }
    for (const [where, text] of haystacks) {
      for (const canary of canaries)
        expect(text.includes(canary), `a secret appears in ${where}`).toBe(false);
    }
    expect(logLines.length).toBeGreaterThan(10);
  });
});
