// The frame around every page: a top bar (menu button, home, search, theme toggle), the
// sidebar with the current page marked, the text, an "on this page" list from the page's
// h2s, and prev/next links in reading order. No framework: the pages work without script,
// and assets/site.js adds the menu, search, copy buttons and hints one at a time.
import { escape, sections } from './html.ts';

export interface PageLink {
  file: string;
  /** As the sidebar and the pager show it. */
  label: string;
}

export interface Navigation {
  lessons: PageLink[];
  reference: PageLink[];
  /** Every page in reading order, for prev/next. */
  order: PageLink[];
}

// Set before the first paint, so a reader who chose dark never sees a white flash.
const THEME_BEFORE_PAINT = `try{var t=localStorage.getItem('theme');if(t==='light'||t==='dark')document.documentElement.dataset.theme=t}catch(e){}`;

export function page(file: string, title: string, body: string, nav: Navigation): string {
  const link = (l: PageLink) => `<a href="${l.file}"${l.file === file ? ' aria-current="page"' : ''}>${escape(l.label)}</a>`;
  const onThisPage = sections(body).filter((s) => s.id);
  const toc = onThisPage.length >= 2
    ? `<nav class="toc" aria-label="On this page"><p>On this page</p><ol>${onThisPage.map((s) => `<li><a href="#${s.id}">${escape(s.heading)}</a></li>`).join('')}</ol></nav>`
    : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(title)} · Staying Connected</title>
<script>${THEME_BEFORE_PAINT}</script>
<link rel="icon" href="assets/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="assets/site.css">
<noscript><style>.hint[hidden] { display: block; } .search, .theme-toggle { display: none; }</style></noscript>
</head><body>
<a class="skip" href="#content">Skip to the text</a>
<header class="topbar">
<button class="menu-button" type="button" aria-expanded="false" aria-controls="sidebar">Menu</button>
<a class="home" href="index.html">Staying Connected</a>
<div class="search" role="search"><input type="search" id="search" placeholder="Search" aria-label="Search the workbook" autocomplete="off" spellcheck="false"><ol class="search-results" id="search-results" hidden></ol></div>
<button class="theme-toggle" type="button" aria-label="Switch between light and dark"><span aria-hidden="true">◐</span></button>
</header>
<div class="layout">
<nav class="sidebar" id="sidebar" aria-label="The workbook">
<p>${link(nav.order[0]!)}</p>
<p class="group">Lessons</p><ol>${nav.lessons.map((l) => `<li>${link(l)}</li>`).join('')}</ol>
<p class="group">Reference</p><ul>${nav.reference.map((l) => `<li>${link(l)}</li>`).join('')}</ul>
</nav>
<main id="content">${body}
${pager(file, nav.order)}</main>
${toc}
</div>
<script src="assets/site.js"></script>
</body></html>
`;
}

function pager(file: string, order: PageLink[]): string {
  const i = order.findIndex((l) => l.file === file);
  const prev = order[i - 1];
  const next = order[i + 1];
  return `<nav class="pager" aria-label="Previous and next">${prev ? `<a rel="prev" href="${prev.file}"><small>Previous</small>${escape(prev.label)}</a>` : '<span></span>'}${next ? `<a rel="next" href="${next.file}"><small>Next</small>${escape(next.label)}</a>` : ''}</nav>`;
}
