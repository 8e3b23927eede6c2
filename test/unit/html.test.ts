/**
 * The one HTML template of every page (functions/adapters/lambda/html.ts): every
 * interpolated value is escaped unless it is a `SafeHtml` fragment, and the
 * broker's page wrapper keeps its security headers and nonces.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SafeHtml, escapeHtml, markup, trusted } from '../../functions/adapters/lambda/html.ts';
import { errorPage, htmlPage } from '../../functions/adapters/lambda/responses.ts';

const decode = (s: string) => s.replace(/&#(\d+);/g, (_, n: string) => String.fromCharCode(Number(n)));

describe('escapeHtml', () => {
  it('escapes & < > " \' ` = / as numeric references, and nothing else', () => {
    expect(escapeHtml(`&<>"'\`=/`)).toBe('&#38;&#60;&#62;&#34;&#39;&#96;&#61;&#47;');
    expect(escapeHtml('Sam Sandbox · café 42')).toBe('Sam Sandbox · café 42');
  });

  it('leaves no character that could end a text node or a quoted attribute, and loses nothing', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: fc.constantFrom(...'&<>"\'`=/#;x é😀') })), (s) => {
        const out = escapeHtml(s);
        return !/[<>"'`]/.test(out) && !out.replace(/&#\d+;/g, '').includes('&') && decode(out) === s;
      }),
    );
  });
});

describe('markup', () => {
  it('escapes every interpolated value, in text and in attributes', () => {
    const value = `"><script>alert('x')</script>`;
    const out = markup`<p title="${value}">${value}</p>`.value;
    expect(out).not.toContain('<script>');
    expect(out).toBe(`<p title="${escapeHtml(value)}">${escapeHtml(value)}</p>`);
  });

  it('passes fragments it built, and trusted static text, through as they are', () => {
    const inner = markup`<b>${'<i>'}</b>`;
    expect(inner).toBeInstanceOf(SafeHtml);
    expect(markup`<p>${inner}${trusted('<br>')}</p>`.value).toBe('<p><b>&#60;i&#62;</b><br></p>');
  });

  it('joins arrays (each item escaped or passed as above), and writes nothing for null, undefined and false', () => {
    expect(markup`<ul>${['<a>', markup`<li>b</li>`, 0]}</ul>`.value).toBe('<ul>&#60;a&#62;<li>b</li>0</ul>');
    expect(markup`[${null}${undefined}${false}]`.value).toBe('[]');
  });

  it('writes a URL for an attribute readably, escaped, and only if it is http(s)', () => {
    const url = new URL(`https://crm.example/callback/close?a=1&b='x'`);
    expect(markup`<form action="${url}">`.value).toBe(
      '<form action="https://crm.example/callback/close?a=1&#38;b=%27x%27">',
    );
    expect(markup`<a href="${new URL('http://127.0.0.1:3000/p?q="<x>"')}">`.value).toBe(
      '<a href="http://127.0.0.1:3000/p?q=%22%3Cx%3E%22">',
    );
    expect(() => markup`<a href="${new URL('javascript:alert(1)')}">`).toThrow(/javascript:/);
    expect(() => markup`<a href="${new URL('data:text/html,<script>')}">`).toThrow();
  });

  it('never trusts a string, even one that came from markup', () => {
    const fragment = markup`<b>bold</b>`;
    expect(markup`${String(fragment)}`.value).toBe('&#60;b&#62;bold&#60;&#47;b&#62;');
  });
});

describe('broker pages', () => {
  const csp = (page: ReturnType<typeof htmlPage>) => String(page.headers?.['Content-Security-Policy']);

  it('escape the title and the values of an error page', () => {
    const page = errorPage(400, 'bad<code>', '<img src=x onerror=alert(1)>');
    expect(page.statusCode).toBe(400);
    expect(page.body).not.toContain('<img');
    expect(page.body).toContain('&#60;img src&#61;x onerror&#61;alert(1)&#62;');
    expect(page.body).toContain('<code>bad&#60;code&#62;</code>');
    expect(htmlPage(200, '</title><script>', markup``).body).toContain(
      '<title>&#60;&#47;title&#62;&#60;script&#62;</title>',
    );
  });

  it('allow their inline style and script by one fresh nonce, named in the CSP', () => {
    const page = htmlPage(200, 't', markup`<p>x</p>`, { script: 'document.forms[0].submit();' });
    const nonce = /script-src 'nonce-([A-Za-z0-9+/=]+)'/.exec(csp(page))?.[1] as string;
    expect(csp(page)).toContain(`style-src 'nonce-${nonce}'`);
    expect(page.body).toContain(`<style nonce="${nonce}">`);
    expect(page.body).toContain(`<script nonce="${nonce}">document.forms[0].submit();</script>`);
    expect(csp(htmlPage(200, 't', markup``))).not.toContain(nonce);
    expect(csp(htmlPage(200, 't', markup``))).not.toContain('script-src');
  });

  it('escape every value in the body (no string body exists to forget it)', () => {
    expect(htmlPage(200, 't', markup`<p>${'<b>'}</p>`).body).toContain('<body><p>&#60;b&#62;</p></body>');
  });
});
