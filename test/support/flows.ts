/** The connect flow as a person clicks it, through a test broker and its sandbox CRMs. */
import { expect } from 'vitest';
import { Browser, type Page } from './browser.ts';
import type { TestBroker } from './local-broker.ts';

export const returnToOf = (broker: TestBroker) => `${broker.server.deps.config.publicBaseUrl}/done`;

export async function startConnect(broker: TestBroker, provider: string, ownerId = 'user-42') {
  const session = await broker.invoke('connect-session', { ownerId, provider, returnTo: returnToOf(broker) });
  if (!session.ok) throw new Error(`connect-session failed: ${session.errorType}`);
  return session.value as { connectUrl: string; expiresAt: string };
}

/**
 * Clicks `button` on the CRM's consent page and follows the answer back to the
 * broker and on to `returnTo`. With `crossSitePost`, Copper's form POST arrives
 * without cookies, as a browser sends a cross-site POST with Lax cookies.
 */
export async function consent(
  broker: TestBroker,
  browser: Browser,
  consentPage: Page,
  button: RegExp,
  crossSitePost = false,
): Promise<Page> {
  expect(consentPage.status).toBe(200);
  let answer = await browser.submit(consentPage, button);
  // Copper answers with a page that auto-posts a form to the broker's callback.
  if (
    answer.status === 200 &&
    /<form[^>]*method="?post/i.test(answer.body) &&
    answer.body.includes('/callback/')
  ) {
    answer = await browser.submit(answer, undefined, { sendCookies: !crossSitePost });
    if (crossSitePost) {
      // The broker bounces the cross-site POST through its own page, which re-posts same-site.
      expect(answer.status).toBe(200);
      expect(answer.body).toContain('Finishing the connection');
      answer = await browser.submit(answer);
    }
  }
  return browser.follow(answer, (url) => url.startsWith(returnToOf(broker)));
}

/** Connects `provider` for `ownerId`; returns the final `returnTo` URL. */
export async function connect(
  broker: TestBroker,
  provider: string,
  opts: { crossSitePost?: boolean; ownerId?: string; button?: RegExp } = {},
): Promise<{ browser: Browser; final: URL; connectionId: string | null }> {
  const browser = new Browser();
  const { connectUrl } = await startConnect(broker, provider, opts.ownerId);
  const redirect = await browser.request(connectUrl);
  expect(redirect.status).toBe(302);
  const consentPage = await browser.follow(redirect);
  const done = await consent(broker, browser, consentPage, opts.button ?? /allow/i, opts.crossSitePost);
  const final = new URL(done.url);
  return { browser, final, connectionId: final.searchParams.get('connection_id') };
}
