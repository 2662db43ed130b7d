// The readers' site: one static page per lesson (its text, the exercise, the tests that
// check it, the hints one at a time, and the solution as a diff for those who ask), an
// index, the module map, the protocol, the operations guide and the bench. `npm run site`
// writes site/dist/; open site/dist/index.html, or `npm run site:serve`.
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { diffToReference, lessonFiles, listLessons, splitFrontMatter, type LessonInfo } from '../runtime/lessons.ts';
import { lessonsDir, projectRoot } from '../runtime/targets/resolve.ts';
import { escape, heading, plainText } from './html.ts';
import { page, type Navigation, type PageLink } from './layout.ts';
import { CodeBlocks } from './highlight.ts';
import { createMarkdown } from './markdown.ts';
import { searchIndexScript, type Searchable } from './search.ts';

const siteDir = path.join(projectRoot, 'site');

export interface BuiltSite {
  dir: string;
  /** In reading order. */
  pages: string[];
  searchDocuments: number;
}

interface Render {
  markdown(source: string): string;
  code(source: string, lang: string): string;
}

interface Page extends PageLink {
  title: string;
  body: string;
  /** The part worth searching: prose, not code. */
  prose: string;
}

// A link that works on GitHub (to a Markdown file in the repository) becomes a link to the
// page made from it.
const PAGES_FROM_MARKDOWN: Array<[RegExp, (m: RegExpMatchArray) => string]> = [
  [/(?:^|\/)PROTOCOL\.md$/, () => 'protocol.html'],
  [/(?:^|\/)(\d\d-[\w-]+)\/README\.md$/, (m) => `${m[1]}.html`],
  [/(?:^|\/)deploy\/README\.md$/, () => 'operations.html'],
  [/(?:^|\/)bench\/README\.md$/, () => 'bench.html'],
];

function pageFor(href: string): string {
  if (/^[a-z]+:/i.test(href) || href.startsWith('#')) return href;
  const [file, hash] = href.split('#') as [string, string?];
  let target = file;
  for (const [pattern, page] of PAGES_FROM_MARKDOWN) {
    const m = file.match(pattern);
    if (m) target = page(m);
  }
  return hash ? `${target}#${hash}` : target;
}

export async function buildSite(outDir = path.join(siteDir, 'dist')): Promise<BuiltSite> {
  const code = new CodeBlocks();
  try {
    return await writeSite(code, outDir);
  } finally {
    await code.close();
  }
}

async function writeSite(code: CodeBlocks, outDir: string): Promise<BuiltSite> {
  const render: Render = { markdown: createMarkdown(code, pageFor), code: (source, lang) => code.add(source, lang) };
  const lessons = listLessons();
  const fromMarkdown = (file: string, label: string, source: string): Page => {
    const body = render.markdown(readFileSync(source, 'utf8'));
    const h1 = body.match(/<h1[^>]*>([\s\S]*?)<\/h1>/)?.[1];
    const title = h1 ? plainText(h1) : label;
    return { file, label, title, body, prose: body };
  };
  const home = indexPage(lessons);
  const lessonPages = lessons.map((lesson) => lessonPage(lesson, render));
  const reference = [
    fromMarkdown('modules.html', 'The module map', path.join(siteDir, 'pages', 'modules.md')),
    fromMarkdown('protocol.html', 'The wire protocol', path.join(lessonsDir, 'PROTOCOL.md')),
    fromMarkdown('operations.html', 'Operations', path.join(projectRoot, 'deploy', 'README.md')),
    fromMarkdown('bench.html', 'The bench', path.join(projectRoot, 'bench', 'README.md')),
  ];
  const highlighted = await code.highlightAll();
  const all = [home, ...lessonPages, ...reference];
  const nav: Navigation = { lessons: lessonPages, reference, order: all };

  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(path.join(outDir, 'assets'), { recursive: true });
  for (const p of all) writeFileSync(path.join(outDir, p.file), highlighted(page(p.file, p.title, p.body, nav)));
  for (const asset of ['site.css', 'site.js', 'icon.svg']) copyFileSync(path.join(siteDir, 'assets', asset), path.join(outDir, 'assets', asset));
  // minisearch's browser build (a UMD script that sets window.MiniSearch), next to its CommonJS entry.
  const minisearchCjs = createRequire(import.meta.url).resolve('minisearch');
  copyFileSync(path.join(path.dirname(minisearchCjs), '..', 'umd', 'index.js'), path.join(outDir, 'assets', 'minisearch.js'));
  // The bench page shows the charts its last full run drew.
  mkdirSync(path.join(outDir, 'charts'));
  const charts = path.join(projectRoot, 'bench', 'charts');
  for (const chart of readdirSync(charts).filter((f) => f.endsWith('.svg'))) copyFileSync(path.join(charts, chart), path.join(outDir, 'charts', chart));
  const search = searchIndexScript(all.map((p): Searchable => ({ file: p.file, title: p.title, html: p.prose })));
  writeFileSync(path.join(outDir, 'search-index.js'), search.script);
  return { dir: outDir, pages: all.map((p) => p.file), searchDocuments: search.documents };
}

function lessonPage(lesson: LessonInfo, render: Render): Page {
  const { body } = splitFrontMatter(readFileSync(lesson.readme, 'utf8'));
  const files = lessonFiles(lesson);
  const prose = [
    `<p class="concern">${escape(lesson.concern)}</p>`,
    lesson.learn.length ? `${heading(2, 'What you will learn')}<ul>${lesson.learn.map((l) => `<li>${escape(l)}</li>`).join('')}</ul>` : '',
    render.markdown(body.replace(/^\s*# .*\n/, '')),
  ].join('\n');
  const solution = diffToReference(lesson);
  const tests = existsSync(lesson.testFile) ? render.code(readFileSync(lesson.testFile, 'utf8'), 'typescript') : '<p>No tests yet.</p>';
  const rest = [
    `${heading(2, 'The exercise')}<p>Fix these files in <code>lessons/${lesson.slug}/</code>, then run <code>npm test -- ${lesson.nn}</code>.</p>`,
    ...files.map((f) => `<h3>${escape(f)}</h3>${render.code(readFileSync(path.join(lessonsDir, lesson.slug, f), 'utf8'), 'typescript')}`),
    `${heading(2, 'The tests that check it')}<details><summary>test/${lesson.slug}.test.ts</summary>${tests}</details>`,
    `${heading(2, 'Hints')}<p>One at a time: each goes a step further than the one before.</p>`,
    // Later hints stay hidden until the one before is opened (assets/site.js).
    ...lesson.hints.map((h, n) => `<details class="hint"${n ? ' hidden' : ''}><summary>Hint ${n + 1} of ${lesson.hints.length}</summary>${render.markdown(h)}</details>`),
    `${heading(2, 'The solution')}<details class="solution"><summary>Show the diff from the exercise to the reference solution</summary>${solution ? render.code(solution, 'diff') : '<p>No differences.</p>'}</details>`,
  ].join('\n');
  const title = `${lesson.nn} · ${lesson.title}`;
  return { file: `${lesson.slug}.html`, label: `${lesson.nn} ${lesson.title}`, title, body: `<h1>${escape(title)}</h1>${prose}\n${rest}`, prose };
}

function indexPage(lessons: LessonInfo[]): Page {
  const rows = lessons.map((l) => `<tr><td>${l.nn}</td><td><a href="${l.slug}.html">${escape(l.title)}</a></td><td>${escape(l.concern)}</td></tr>`).join('');
  const prose = `<p>A workbook that teaches production TCP server engineering on Node.js, in TypeScript, one broken server at a time.
Each lesson is a small TCP server that works on the happy path and carries the mistakes real people make about one concern.
Clone the repository, run <code>npm install</code> and <code>npm start</code>, and fix each server until its tests pass.</p>
${heading(2, 'The lessons')}
<div class="table-scroll"><table><thead><tr><th>#</th><th>Lesson</th><th>The concern</th></tr></thead><tbody>${rows}</tbody></table></div>
${heading(2, 'Reference')}
<p>Every lesson speaks the same <a href="protocol.html">wire protocol</a>. The <a href="modules.html">module map</a> shows which
lesson's module does what in the finished gateway; <a href="operations.html">operations</a> is how to run it on more than one
process and machine; and <a href="bench.html">the bench</a> measures it against a naive gateway and a ws server.</p>`;
  return { file: 'index.html', label: 'Start here', title: 'Staying Connected', body: `<h1>Staying Connected</h1>${prose}`, prose };
}

// Run directly: build and say where the pages are.
if (import.meta.url === `file://${process.argv[1]}`) {
  const started = performance.now();
  const site = await buildSite();
  console.log(`${site.pages.length} pages, ${site.searchDocuments} search sections, in ${path.relative(projectRoot, site.dir)}/ (${Math.round(performance.now() - started)} ms) — open index.html or run npm run site:serve`);
}
