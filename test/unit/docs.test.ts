/**
 * The README and docs/ are what a newcomer reads first: every relative link must reach a file, every
 * `#anchor` a heading, no link may leave the repository for the team's notes (`../shared`), and tables
 * stay readable (no table line past 120 characters).
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '../..');
const pages = ['README.md', 'SECURITY.md', ...readdirSync(join(root, 'docs')).map((f) => `docs/${f}`)].filter(
  (f) => f.endsWith('.md'),
);

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens. */
function anchors(markdown: string): Set<string> {
  const out = new Set<string>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const heading = fenced ? null : /^#{1,6} (.*)$/.exec(line);
    if (!heading?.[1]) continue;
    out.add(
      heading[1]
        .toLowerCase()
        .replace(/[^\p{L}\p{N} _-]/gu, '')
        .replace(/ /g, '-'),
    );
  }
  return out;
}

/** Links outside code blocks and code spans: `[text](target)`. */
function links(markdown: string): string[] {
  const prose = markdown.replace(/```[\s\S]*?```/g, '').replace(/`[^`\n]*`/g, '');
  return [...prose.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1] ?? '');
}

describe.each(pages)('%s', (page) => {
  const text = readFileSync(join(root, page), 'utf8');

  it('links only to files and headings that exist in the repository', () => {
    const broken: string[] = [];
    for (const target of links(text)) {
      if (/^(https?|mailto):/.test(target)) continue;
      const [path = '', anchor] = target.split('#');
      const file = path ? resolve(dirname(join(root, page)), path) : join(root, page);
      if (relative(root, file).startsWith('..') || !existsSync(file)) {
        broken.push(target);
        continue;
      }
      if (anchor && !(statSync(file).isFile() && anchors(readFileSync(file, 'utf8')).has(anchor))) {
        broken.push(target);
      }
    }
    expect(broken).toEqual([]);
  });

  it('never points at the team notes outside the repository', () => {
    expect(text).not.toMatch(/\.\.\/shared\//);
  });

  it.skipIf(page === 'SECURITY.md')('keeps table lines within 120 characters', () => {
    const wide = text.split('\n').filter((line) => line.startsWith('|') && line.length > 120);
    expect(wide).toEqual([]);
  });
});
