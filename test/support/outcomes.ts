/**
 * What a refused or failed step must look like, and what the table holds for
 * one owner: shared by the adversary and store-fault tests.
 */
import { expect } from 'vitest';
import type { Page } from './browser.ts';
import type { TestBroker } from './local-broker.ts';

/** An HTML error page with `status` (4xx/5xx), no stack trace, no success. */
export function expectErrorPage(page: Page, status: number) {
  expect(page.status, page.body).toBe(status);
  expect(page.headers.get('content-type')).toMatch(/^text\/html/);
  expect(page.headers.get('location')).toBeNull();
  expect(page.body).toContain('did not complete');
  expect(page.body).not.toMatch(/\bat .*\.[cm]?[jt]s:\d+/); // no stack trace
  expect(page.body).not.toMatch(/Exception|TimeoutError|DynamoDB/); // no internals
}

/** A redirect to `returnTo` saying `status=error` (with `error=<code>` when given), carrying no code or token. */
export function expectErrorRedirect(page: Page, returnTo: string, code?: string) {
  expect(page.status, page.body).toBe(302);
  const location = new URL(page.headers.get('location') ?? '');
  expect(`${location.origin}${location.pathname}`).toBe(returnTo);
  expect(location.searchParams.get('status')).toBe('error');
  if (code) expect(location.searchParams.get('error')).toBe(code);
  expect([...location.searchParams.keys()].sort()).toEqual(['error', 'status']);
}

/** A redirect to `returnTo` saying `status=connected`; returns the connection id. */
export function expectConnectedRedirect(page: Page, returnTo: string): string {
  expect(page.status, page.body).toBe(302);
  const location = new URL(page.headers.get('location') ?? '');
  expect(`${location.origin}${location.pathname}`).toBe(returnTo);
  expect(location.searchParams.get('status')).toBe('connected');
  const id = location.searchParams.get('connection_id') ?? '';
  expect(id).toMatch(/^conn_[0-9a-f]{32}$/);
  return id;
}

type Item = Record<string, unknown>;

/** Items of one kind (`CONN#`, `STATE#`, `SESSION#`), raw, optionally only `ownerId`'s. */
export async function itemsOf(broker: TestBroker, prefix: string, ownerId?: string): Promise<Item[]> {
  return (await broker.scan()).filter(
    (i) => String(i.pk).startsWith(prefix) && (ownerId === undefined || i.ownerId === ownerId),
  );
}

/** No connection of any owner is `needs_reauth`: a store fault must never look like a dead grant. */
export async function expectNoneNeedsReauth(broker: TestBroker) {
  const marked = (await itemsOf(broker, 'CONN#')).filter((i) => i.status !== 'active');
  expect(marked.map((i) => `${String(i.ownerId)}: ${String(i.status)}`)).toEqual([]);
}
