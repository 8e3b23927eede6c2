/**
 * The one way HTML is written, for the broker's pages, the local demo page and
 * the sandbox CRMs: the `markup` tagged template escapes every interpolated
 * value unless it is a `SafeHtml` fragment (one `markup` built, or trusted
 * static text wrapped by `trusted`). A `URL` value is for an `href`/`action`
 * attribute: only http(s) is written. (The tag is not called `html` so that
 * Prettier leaves the markup as written: it reformats `html` templates.)
 */

/** HTML that is safe to insert as is: built by `markup`, or static text the code wrote. */
export class SafeHtml {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

const reference = (c: string) => `&#${c.charCodeAt(0)};`;

/**
 * Escapes text for an HTML text node or a quoted attribute value: `& < > " '`,
 * the backtick, and `=` and `/` (harmless everywhere, and enough should an
 * attribute ever go unquoted), each as a numeric character reference.
 */
export const escapeHtml = (value: string): string => value.replace(/[&<>"'`=/]/g, reference);

/**
 * A URL for a quoted `href` or `action` attribute: http(s) only (never `javascript:`), written as
 * its serialized `href` with `& < > " '` and the backtick escaped, its `/` and `=` left readable.
 */
export function escapeUrl(url: URL): string {
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new Error(`refusing to write a ${url.protocol} URL into a page`);
  return url.href.replace(/[&<>"'`]/g, reference);
}

/**
 * What `markup` takes: text and numbers are escaped; `null`, `undefined` and `false` add nothing;
 * a `URL` is an attribute's http(s) URL (`escapeUrl`).
 */
export type HtmlValue = string | number | URL | SafeHtml | false | null | undefined | readonly HtmlValue[];

const render = (value: HtmlValue): string => {
  if (value instanceof SafeHtml) return value.value;
  if (value instanceof URL) return escapeUrl(value);
  if (Array.isArray(value)) return (value as readonly HtmlValue[]).map(render).join('');
  if (value === null || value === undefined || value === false) return '';
  return escapeHtml(String(value));
};

/** Tagged template: every interpolation is escaped unless it is `SafeHtml` (arrays are joined, each item so). */
export function markup(strings: TemplateStringsArray, ...values: HtmlValue[]): SafeHtml {
  let out = strings[0] ?? '';
  values.forEach((value, i) => {
    out += render(value) + (strings[i + 1] ?? '');
  });
  return new SafeHtml(out);
}

/** Static HTML the code itself wrote (a stylesheet, an inline script): never anything received. */
export const trusted = (staticHtml: string): SafeHtml => new SafeHtml(staticHtml);
