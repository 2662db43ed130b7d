// Markdown to HTML for the site: markdown-it for the prose, ```mermaid blocks drawn as SVG
// (diagrams.ts), every other code block left to CodeBlocks (highlight.ts), and an id on
// every h2 and h3 so the "on this page" list and the search results can link to them.
import MarkdownIt from 'markdown-it';
import anchor from 'markdown-it-anchor';
import { renderDiagram } from './diagrams.ts';
import type { CodeBlocks } from './highlight.ts';
import { slugify } from './html.ts';

/**
 * `pageFor` maps a link to one of the repository's Markdown files to the page built from
 * it, so a link that works on GitHub works on the site too.
 */
export function createMarkdown(code: CodeBlocks, pageFor: (href: string) => string): (source: string) => string {
  const md = MarkdownIt({ html: false, linkify: true, highlight: (source, lang) => code.add(source, lang) })
    .use(anchor, { level: [2, 3], slugify });
  const fence = md.renderer.rules.fence!;
  md.renderer.rules.fence = (tokens, i, options, env, self) =>
    tokens[i]!.info.trim() === 'mermaid' ? renderDiagram(tokens[i]!.content) : fence(tokens, i, options, env, self);
  md.renderer.rules.link_open = (tokens, i, options, _env, self) => {
    const href = tokens[i]!.attrGet('href');
    if (typeof href === 'string') tokens[i]!.attrSet('href', pageFor(href));
    return self.renderToken(tokens, i, options);
  };
  // A wide table scrolls inside its own box instead of widening a phone's page.
  md.renderer.rules.table_open = () => '<div class="table-scroll"><table>\n';
  md.renderer.rules.table_close = () => '</table></div>\n';
  return (source) => md.render(source);
}
