// Mermaid blocks in the Markdown become inline SVG at build time: beautiful-mermaid lays
// them out without a DOM, so the site ships no diagram library and the page needs no script
// to show them. Inline (not <img>) so the diagram takes its colours from the page's CSS
// variables and follows the theme toggle.
import { renderMermaidSVG } from 'beautiful-mermaid';
import { escape } from './html.ts';

// The site's own colour variables; the SVG derives every other shade from these.
const COLOURS = { bg: 'var(--c-bg)', fg: 'var(--c-fg)', accent: 'var(--c-accent)', muted: 'var(--c-muted)', transparent: true } as const;

let diagramCount = 0;

/** The SVG for one Mermaid source, wrapped in a <figure> that scrolls if it is wider than the page. */
export function renderDiagram(source: string): string {
  const prefix = `d${++diagramCount}-`;
  const svg = renderMermaidSVG(source, { ...COLOURS, font: 'system-ui', padding: 16 })
    // The renderer asks Google for the Inter font: the site makes no request off its own host.
    .replace(/@import url\([^)]*\);?\n?/g, '')
    // Every diagram defines the same marker ids; several on one page must not share them.
    .replace(/\bid="([^"]+)"/g, `id="${prefix}$1"`)
    .replace(/url\(#([^)]+)\)/g, `url(#${prefix}$1)`)
    .replace(/href="#([^"]+)"/g, `href="#${prefix}$1"`);
  return `<figure class="diagram" role="img" aria-label="${escape(firstLine(source))}">${svg}</figure>\n`;
}

function firstLine(source: string): string {
  const title = source.match(/^\s*%%\s*(.+)$/m);
  return title ? title[1]!.trim() : 'diagram';
}

