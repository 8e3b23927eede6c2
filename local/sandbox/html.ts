/**
 * The sandbox CRMs' HTML pages: consent, Copper's auto-posting callback form,
 * errors and an index, written with the broker's escaping `markup` template
 * (functions/adapters/lambda/html.ts): every interpolated value is escaped;
 * only fragments built by it, or static text wrapped by `trusted`, pass through.
 */
import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { type SafeHtml, markup, trusted } from '../../functions/adapters/lambda/html.ts';
import type { CrmSpec, Organization } from './crms.ts';

const STYLE = `
body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;color:#1d2430}
.sandbox{background:#fff4ce;border:1px solid #e0c45c;padding:.4rem .7rem;border-radius:4px;font-size:.9rem}
h1{font-size:1.4rem}ul{padding-left:1.2rem}fieldset{border:1px solid #c8ccd4;border-radius:4px;margin:1rem 0}
label{display:block;margin:.3rem 0}.buttons{display:flex;gap:.6rem;margin-top:1.2rem}
button{font-size:1rem;padding:.5rem 1.2rem;border-radius:4px;border:1px solid #8a93a3;cursor:pointer}
button[value=allow]{background:#1f6feb;color:#fff;border-color:#1f6feb}
code{background:#f1f3f6;padding:0 .2rem;border-radius:3px}table{border-collapse:collapse}
td,th{border:1px solid #c8ccd4;padding:.2rem .5rem;text-align:left}
`;

const BASE_CSP =
  "default-src 'none'; style-src 'unsafe-inline'; form-action *; frame-ancestors 'none'; base-uri 'none'";

/** Writes an HTML page with the sandbox's security headers; `nonce` allows inline scripts carrying it. */
export function sendPage(
  res: ServerResponse,
  status: number,
  title: string,
  body: SafeHtml,
  opts: { nonce?: string; script?: string } = {},
): void {
  const csp = opts.nonce ? `${BASE_CSP}; script-src 'nonce-${opts.nonce}'` : BASE_CSP;
  // The nonce is ours (base64 of random bytes) and the script static: both written as they are.
  const script =
    opts.nonce && opts.script
      ? markup`<script nonce="${trusted(opts.nonce)}">${trusted(opts.script)}</script>`
      : '';
  const page = markup`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${title}</title>
<style>${trusted(STYLE)}</style>
</head>
<body>
${body}
${script}
</body>
</html>
`;
  res.writeHead(status, {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Security-Policy': csp,
    'X-Frame-Options': 'DENY',
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
    'Cache-Control': 'no-store',
  });
  res.end(page.value);
}

const banner = (crm?: CrmSpec) =>
  markup`<p class="sandbox" role="note">Sandbox${crm ? ` ${crm.displayName}` : ''}: a local imitation for development. No real CRM account is involved.</p>`;

/** A plain error page (never a redirect: the redirect URI may not be trustworthy). */
export function sendErrorPage(res: ServerResponse, status: number, message: string, crm?: CrmSpec): void {
  const title = status === 404 ? 'Not found' : status === 413 ? 'Request too large' : 'Bad request';
  sendPage(
    res,
    status,
    `${title}${crm ? ` · ${crm.displayName} sandbox` : ''}`,
    markup`${banner(crm)}
<main>
<h1>${title}</h1>
<p>${message}</p>
</main>`,
  );
}

export interface ConsentView {
  crm: CrmSpec;
  action: string;
  requestId: string;
  scope: readonly string[];
  redirectUri: string;
  organizations?: readonly Organization[];
}

export function sendConsentPage(res: ServerResponse, view: ConsentView): void {
  const { crm } = view;
  const target = new URL(view.redirectUri);
  const scopes = view.scope.map((s) => markup`<li><code>${s}</code>: ${crm.scopes[s] ?? ''}</li>`);
  const checked = trusted(' checked');
  const orgs = view.organizations?.length
    ? markup`<fieldset>
<legend>Organization to connect</legend>
${view.organizations.map(
  (o, i) =>
    markup`<label><input type="radio" name="organization_id" value="${o.id}"${i === 0 ? checked : ''} required> ${o.name}</label>
`,
)}</fieldset>`
    : '';
  sendPage(
    res,
    200,
    `Authorize ${crm.client.appName} · ${crm.displayName} sandbox`,
    markup`${banner(crm)}
<main>
<h1>Authorize ${crm.client.appName}</h1>
<p><strong>${crm.client.appName}</strong> wants to access your ${crm.displayName} account.</p>
<p>Signed in as ${crm.user.name} (${crm.user.email}).</p>
<p>It asks for:</p>
<ul>${scopes}</ul>
<form method="post" action="${view.action}">
<input type="hidden" name="request" value="${view.requestId}">
${orgs}
<p>You will be sent back to <code>${target.origin}</code>.</p>
<div class="buttons">
<button type="submit" name="decision" value="allow">Allow</button>
<button type="submit" name="decision" value="deny" formnovalidate>Deny</button>
</div>
</form>
</main>`,
  );
}

/** Copper's way back: a page whose form POSTs the answer to the redirect URI, submitted by script. */
export function sendFormPost(
  res: ServerResponse,
  crm: CrmSpec,
  redirectUri: string,
  fields: [string, string][],
): void {
  const nonce = randomBytes(16).toString('base64');
  const target = new URL(redirectUri);
  sendPage(
    res,
    200,
    `Returning to ${target.host} · ${crm.displayName} sandbox`,
    markup`${banner(crm)}
<main>
<h1>Returning to ${crm.client.appName}</h1>
<form method="post" action="${target}">
${fields.map(
  ([name, value]) => markup`<input type="hidden" name="${name}" value="${value}">
`,
)}<p>If nothing happens, continue by hand:</p>
<button type="submit">Continue to ${target.host}</button>
</form>
</main>`,
    { nonce, script: 'document.forms[0].submit();' },
  );
}

export interface IndexRow {
  crm: CrmSpec;
  base: string;
  grants: number;
  calls: Record<string, number>;
}

/** `/sandbox/`: what each sandbox CRM is, where, and what it has seen. */
export function sendIndexPage(res: ServerResponse, rows: readonly IndexRow[]): void {
  const row = (name: string, value: SafeHtml | string | number) =>
    markup`<tr><th scope="row">${name}</th><td>${value}</td></tr>
`;
  const code = (value: string) => markup`<code>${value}</code>`;
  const sections = rows.map(({ crm, base, grants, calls }) => {
    const cells = [
      row('client_id', code(crm.client.id)),
      row('authorize', code(base + crm.paths.authorize)),
      row('token', code(base + crm.paths.token)),
      row('revoke', crm.revoke ? code(base + crm.revoke.path) : 'none'),
      row('API', code(base + crm.paths.apiBase)),
      row('live grants', grants),
      ...Object.entries(calls).map(([k, n]) => row(`calls: ${k}`, n)),
    ];
    return markup`<section>
<h2>${crm.displayName}</h2>
<table>
${cells}</table>
<form method="post" action="/sandbox/_control/revoke?provider=${crm.id}">
<button type="submit">Revoke every ${crm.displayName} grant</button>
</form>
</section>
`;
  });
  sendPage(
    res,
    200,
    'Sandbox CRMs',
    markup`${banner()}
<main>
<h1>Sandbox CRMs</h1>
${sections}<form method="post" action="/sandbox/_control/reset"><button type="submit">Reset call counters</button></form>
</main>`,
  );
}
