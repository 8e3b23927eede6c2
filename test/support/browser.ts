/**
 * A small scripted browser for integration tests: `fetch` with a cookie jar,
 * manual redirects, and HTML form submission, so a test can walk the connect
 * flow step by step and see every response.
 */

export interface Page {
  url: string;
  status: number;
  headers: Headers;
  body: string;
}

export interface Form {
  action: string;
  method: 'GET' | 'POST';
  fields: [string, string][];
  /** Submit buttons: their text, name and value. */
  buttons: { text: string; name?: string; value?: string }[];
}

const decode = (s: string) =>
  s
    .replace(/&#(\d+);/g, (_, n: string) => String.fromCharCode(Number(n)))
    .replace(/&#x([0-9a-f]+);/gi, (_, n: string) => String.fromCharCode(parseInt(n, 16)))
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');

const attr = (tag: string, name: string): string | undefined => {
  const m = new RegExp(`\\s${name}\\s*=\\s*("([^"]*)"|'([^']*)'|([^\\s>]+))`, 'i').exec(tag);
  return m ? decode(m[2] ?? m[3] ?? m[4] ?? '') : undefined;
};

/** Every form on a page, with its hidden/checked/text inputs and its submit buttons. */
export function parseForms(page: Page): Form[] {
  const forms: Form[] = [];
  for (const m of page.body.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const open = m[1] ?? '';
    const inner = m[2] ?? '';
    const fields: [string, string][] = [];
    const radios = new Map<string, string>();
    for (const input of inner.matchAll(/<input\b[^>]*>/gi)) {
      const tag = input[0];
      const name = attr(tag, 'name');
      const type = (attr(tag, 'type') ?? 'text').toLowerCase();
      if (!name || type === 'submit') continue;
      const value = attr(tag, 'value') ?? '';
      if (type === 'radio' || type === 'checkbox') {
        if (/\schecked\b/i.test(tag)) fields.push([name, value]);
        else if (type === 'radio' && !radios.has(name)) radios.set(name, value);
      } else fields.push([name, value]);
    }
    // A radio group with nothing checked: pick the first option, as a person would.
    for (const [name, value] of radios) if (!fields.some(([n]) => n === name)) fields.push([name, value]);
    const buttons = [...inner.matchAll(/<button\b([^>]*)>([\s\S]*?)<\/button>/gi)].map((b) => ({
      text: decode((b[2] ?? '').replace(/<[^>]+>/g, '').trim()),
      ...(attr(b[1] ?? '', 'name') ? { name: attr(b[1] ?? '', 'name') as string } : {}),
      ...(attr(b[1] ?? '', 'value') !== undefined ? { value: attr(b[1] ?? '', 'value') as string } : {}),
    }));
    for (const input of inner.matchAll(/<input\b[^>]*type\s*=\s*["']?submit[^>]*>/gi)) {
      const tag = input[0];
      buttons.push({
        text: attr(tag, 'value') ?? 'Submit',
        ...(attr(tag, 'name') ? { name: attr(tag, 'name') as string } : {}),
        ...(attr(tag, 'value') !== undefined ? { value: attr(tag, 'value') as string } : {}),
      });
    }
    forms.push({
      action: new URL(attr(open, 'action') ?? page.url, page.url).toString(),
      method: (attr(open, 'method') ?? 'GET').toUpperCase() === 'POST' ? 'POST' : 'GET',
      fields,
      buttons,
    });
  }
  return forms;
}

export class Browser {
  /** Cookie name -> value. Host-agnostic on purpose: tests run everything on one loopback server. */
  readonly cookies = new Map<string, string>();
  readonly history: Page[] = [];

  cookieHeader(): string | undefined {
    return this.cookies.size ? [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ') : undefined;
  }

  private remember(headers: Headers) {
    for (const line of headers.getSetCookie()) {
      const [pair] = line.split(';');
      const eq = pair?.indexOf('=') ?? -1;
      if (!pair || eq < 0) continue;
      const name = pair.slice(0, eq).trim();
      const maxAge = /max-age=(-?\d+)/i.exec(line);
      if (maxAge && Number(maxAge[1]) <= 0) this.cookies.delete(name);
      else this.cookies.set(name, pair.slice(eq + 1).trim());
    }
  }

  /** One request, no redirect following. `sendCookies: false` acts like a cross-site POST with Lax cookies. */
  async request(
    url: string,
    init: { method?: 'GET' | 'POST'; body?: URLSearchParams; sendCookies?: boolean } = {},
  ): Promise<Page> {
    const headers: Record<string, string> = {};
    const cookie = this.cookieHeader();
    if (cookie && init.sendCookies !== false) headers.cookie = cookie;
    if (init.body) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetch(url, {
      method: init.method ?? 'GET',
      headers,
      ...(init.body ? { body: init.body.toString() } : {}),
      redirect: 'manual',
    });
    this.remember(res.headers);
    const page = { url, status: res.status, headers: res.headers, body: await res.text() };
    this.history.push(page);
    return page;
  }

  /** Follows 3xx redirects (GET) until a page that is not a redirect, or a URL matching `stopAt`. */
  async follow(page: Page, stopAt?: (url: string) => boolean, max = 10): Promise<Page> {
    let current = page;
    for (let i = 0; i < max && current.status >= 300 && current.status < 400; i++) {
      const location = new URL(current.headers.get('location') ?? '', current.url).toString();
      if (stopAt?.(location)) return { ...current, url: location };
      current = await this.request(location);
    }
    return current;
  }

  async goto(url: string): Promise<Page> {
    return this.follow(await this.request(url));
  }

  /** Submits the form holding the button labelled `buttonText` (or the only form). */
  async submit(page: Page, buttonText?: RegExp, opts: { sendCookies?: boolean } = {}): Promise<Page> {
    const forms = parseForms(page);
    const form = buttonText ? forms.find((f) => f.buttons.some((b) => buttonText.test(b.text))) : forms[0];
    if (!form) throw new Error(`no form${buttonText ? ` with a button ${buttonText}` : ''} on ${page.url}`);
    const body = new URLSearchParams(form.fields);
    const button = buttonText ? form.buttons.find((b) => buttonText.test(b.text)) : undefined;
    if (button?.name) body.append(button.name, button.value ?? '');
    if (form.method === 'POST') {
      return this.request(form.action, { method: 'POST', body, ...opts });
    }
    const url = new URL(form.action);
    for (const [k, v] of body) url.searchParams.append(k, v);
    return this.request(url.toString(), opts);
  }
}
