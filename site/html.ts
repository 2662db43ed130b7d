// Small string helpers the pages share: escaping, heading ids, and reading the h2s back out
// of a rendered page (for the "on this page" list and the search index).

export function escape(text: string): string {
  return text.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}

/** "Unbounded memory: `write()` returning `false`" → "unbounded-memory-write-returning-false". */
export function slugify(text: string): string {
  return text.toLowerCase().replace(/[^\p{L}\p{N}]+/gu, '-').replace(/^-+|-+$/g, '');
}

export function heading(level: 2 | 3, text: string): string {
  return `<h${level} id="${slugify(text)}">${escape(text)}</h${level}>`;
}

/** The text a reader sees in a piece of HTML: tags dropped, entities decoded, spaces folded. */
export function plainText(html: string): string {
  return html
    .replace(/<[^>]+>/g, ' ')
    .replace(/&(amp|lt|gt|quot|#39);/g, (_, e: string) => ({ amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'" })[e]!)
    .replace(/\s+/g, ' ')
    .trim();
}

export interface Section {
  /** The h2's id; '' for what comes before the first h2. */
  id: string;
  heading: string;
  html: string;
}

/** Splits a page's HTML at its h2s. */
export function sections(html: string): Section[] {
  const parts = html.split(/(?=<h2 id=")/);
  return parts.map((part) => {
    const m = part.match(/^<h2 id="([^"]*)"[^>]*>([\s\S]*?)<\/h2>/);
    return m ? { id: m[1]!, heading: plainText(m[2]!), html: part.slice(m[0].length) } : { id: '', heading: '', html: part };
  });
}
