/**
 * Headless Chromium (Debian's `/usr/bin/chromium`, driven by playwright-core)
 * for the browser tests, plus the small helpers they share: a free port,
 * screenshots under `test-results/screenshots/`, and a log of every request a
 * page made with what the browser really sent (cookies, Sec-Fetch-Site).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { type Browser, type Page, type Request, chromium } from 'playwright-core';

export const CHROMIUM_PATH = '/usr/bin/chromium';

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Launches Debian's Chromium; fails loudly (never skips) when it is not installed. */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(
      `The browser tests need Chromium at ${CHROMIUM_PATH}, which is missing. ` +
        'Install it with `sudo apt-get install chromium` (Debian/Ubuntu), then run `npx vitest run --project e2e` again.',
    );
  }
  // Chromium's Debian wrapper script prints a harmless "[: unexpected operator" line on stderr.
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS });
}

/** A port that was free a moment ago on 127.0.0.1 (for a server whose URL must be known before it starts). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

export const SCREENSHOT_DIR = fileURLToPath(new URL('../../test-results/screenshots/', import.meta.url));

/** Saves a full-page screenshot as `test-results/screenshots/<name>.png` (a CI artifact). */
export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  await page.screenshot({ path: `${SCREENSHOT_DIR}${name}.png`, fullPage: true });
}

export interface SentRequest {
  method: string;
  url: URL;
  navigation: boolean;
  /** The headers as sent on the wire, cookies and Sec-Fetch-* included. */
  headers: Record<string, string>;
  postData: URLSearchParams | null;
  status: number | null;
  responseHeaders: Record<string, string>;
}

/** Records every request the page makes; `settled()` resolves them with what was sent and answered. */
export function recordRequests(page: Page) {
  const requests: Request[] = [];
  page.on('request', (request) => requests.push(request));
  return {
    async settled(): Promise<SentRequest[]> {
      return Promise.all(
        requests.map(async (request) => {
          const response = await request.response();
          const post = request.postData();
          return {
            method: request.method(),
            url: new URL(request.url()),
            navigation: request.isNavigationRequest(),
            headers: await request.allHeaders(),
            postData: post === null ? null : new URLSearchParams(post),
            status: response ? response.status() : null,
            responseHeaders: response ? await response.allHeaders() : {},
          };
        }),
      );
    },
  };
}

/**
 * The bodies of the responses to URLs matching `urlPattern` (CDP wildcards), read in the browser as they
 * arrive and passed on untouched: a page that submits itself at once is gone before
 * `response.text()` could read it. The browser still sends every request itself (its cookies, its
 * Sec-Fetch-Site), unlike a Playwright route that fetches on the browser's behalf.
 */
export async function captureResponses(page: Page, urlPattern: string) {
  const captured: { url: string; status: number; body: string }[] = [];
  const cdp = await page.context().newCDPSession(page);
  cdp.on('Fetch.requestPaused', (event) => {
    void (async () => {
      try {
        const { body, base64Encoded } = await cdp.send('Fetch.getResponseBody', {
          requestId: event.requestId,
        });
        captured.push({
          url: event.request.url,
          status: event.responseStatusCode ?? 0,
          body: base64Encoded ? Buffer.from(body, 'base64').toString('utf8') : body,
        });
      } catch {
        // A redirect has no body to read.
      }
      await cdp.send('Fetch.continueRequest', { requestId: event.requestId }).catch(() => undefined);
    })();
  });
  await cdp.send('Fetch.enable', { patterns: [{ urlPattern, requestStage: 'Response' }] });
  return captured;
}

/** Whether a request carried a cookie of this name (as the browser actually sent it). */
export const sentCookie = (request: SentRequest, name: string): boolean =>
  (request.headers.cookie ?? '').split(';').some((c) => c.trim().startsWith(`${name}=`));

export interface AppServer {
  /** `http://localhost:PORT`: same site as the broker, another origin. */
  origin: string;
  /** Where the app's "Connect Copper" link points (set by the test before the page is opened). */
  connectUrl: string;
  close(): Promise<void>;
}

/**
 * A stand-in for the customer's product: `/` has a "Connect Copper" link to a connect URL,
 * `/done` is where the broker sends the person back.
 */
export async function startAppServer(): Promise<AppServer> {
  const app: AppServer = { origin: '', connectUrl: 'about:blank', close: async () => undefined };
  const escape = (s: string) => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
  const server = createHttpServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://app.invalid').pathname;
    const body =
      path === '/'
        ? `<h1>Your app</h1><p><a href="${escape(app.connectUrl)}">Connect Copper</a></p>`
        : path === '/done'
          ? '<h1>Back in your app</h1>'
          : undefined;
    res.writeHead(body ? 200 : 404, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><html lang="en"><title>Your app</title>${body ?? 'Not found'}</html>`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  app.origin = `http://localhost:${address.port}`;
  app.close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return app;
}
