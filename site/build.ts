// The readers' site: one static page per lesson (its text, the exercise, the tests that
// check it, the hints one at a time, and the solution as a diff for those who ask), an
// index, and the protocol. markdown-it renders the prose, shiki colours the code, jsdiff
// makes the diffs. `npm run site` writes site/dist/; open site/dist/index.html.
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import MarkdownIt from 'markdown-it';
import { fromHighlighter } from '@shikijs/markdown-it/core';
import { createHighlighter, createJavaScriptRegexEngine } from 'shiki';
import { createTwoFilesPatch } from 'diff';
import { listLessons, splitFrontMatter, type LessonInfo } from '../runtime/lessons.ts';
import { lessonsDir, projectRoot, solutionsDir } from '../runtime/targets/resolve.ts';

const THEMES = { light: 'github-light', dark: 'github-dark' } as const;

export interface BuiltSite {
  dir: string;
  pages: string[];
}

export async function buildSite(outDir = path.join(projectRoot, 'site', 'dist')): Promise<BuiltSite> {
  // Only the languages the pages use: loading all of shiki's costs seconds.
  const highlighter = await createHighlighter({
    themes: Object.values(THEMES),
    langs: ['typescript', 'bash', 'json', 'diff'],
    engine: createJavaScriptRegexEngine(),
  });
  const md = MarkdownIt({ html: false, linkify: true }).use(
    fromHighlighter(highlighter as never, { themes: THEMES, defaultLanguage: 'text', fallbackLanguage: 'text' } as never),
  );
  // Links between the repository's Markdown files become links between pages.
  const linkTarget = (href: string) => href.replace(/^(?:\.\.\/)*(?:lessons\/)?PROTOCOL\.md$/, 'protocol.html');
  md.renderer.rules.link_open = (tokens, i, options, _env, self) => {
    const href = tokens[i]!.attrGet('href');
    if (typeof href === 'string') tokens[i]!.attrSet('href', linkTarget(href));
    return self.renderToken(tokens, i, options);
  };
  const code = (source: string, lang: string) => highlighter.codeToHtml(source, { lang, themes: THEMES });

  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const lessons = listLessons();
  const pages: string[] = [];
  const write = (name: string, title: string, body: string) => {
    writeFileSync(path.join(outDir, name), page(title, body, lessons));
    pages.push(name);
  };

  write('index.html', 'Staying Connected', indexBody(lessons));
  write('protocol.html', 'The wire protocol', md.render(readFileSync(path.join(lessonsDir, 'PROTOCOL.md'), 'utf8')));
  // The bench: its README (the last full run's tables) and the charts it drew.
  const benchDir = path.join(projectRoot, 'bench');
  mkdirSync(path.join(outDir, 'charts'));
  for (const chart of readdirSync(path.join(benchDir, 'charts')).filter((f) => f.endsWith('.svg'))) {
    copyFileSync(path.join(benchDir, 'charts', chart), path.join(outDir, 'charts', chart));
  }
  write('bench.html', 'The bench', md.render(readFileSync(path.join(benchDir, 'README.md'), 'utf8')));
  lessons.forEach((lesson, i) => {
    const { body } = splitFrontMatter(readFileSync(lesson.readme, 'utf8'));
    const files = readdirSync(path.join(lessonsDir, lesson.slug)).filter((f) => f.endsWith('.ts')).sort();
    const sections = [
      `<p class="concern">${escape(lesson.concern)}</p>`,
      lesson.learn.length ? `<h2>What you will learn</h2><ul>${lesson.learn.map((l) => `<li>${escape(l)}</li>`).join('')}</ul>` : '',
      md.render(body.replace(/^\s*# .*\n/, '')),
      `<h2>The exercise</h2><p>Fix these files in <code>lessons/${lesson.slug}/</code>, then run <code>npm test -- ${lesson.nn}</code>.</p>`,
      ...files.map((f) => `<h3>${escape(f)}</h3>${code(readFileSync(path.join(lessonsDir, lesson.slug, f), 'utf8'), 'typescript')}`),
      `<h2>The tests that check it</h2><details><summary>test/${lesson.slug}.test.ts</summary>${existsSync(lesson.testFile) ? code(readFileSync(lesson.testFile, 'utf8'), 'typescript') : '<p>No tests yet.</p>'}</details>`,
      `<h2>Hints</h2><p>One at a time: each goes a step further than the one before.</p>`,
      ...lesson.hints.map((h, n) => `<details class="hint"><summary>Hint ${n + 1} of ${lesson.hints.length}</summary>${md.render(h)}</details>`),
      `<h2>The solution</h2><details class="solution"><summary>Show the diff from the exercise to the reference solution</summary>${solutionDiff(lesson, files, code)}</details>`,
      nav(lessons, i),
    ];
    write(`${lesson.slug}.html`, `${lesson.nn} · ${lesson.title}`, `<h1>${lesson.nn} · ${escape(lesson.title)}</h1>${sections.join('\n')}`);
  });
  highlighter.dispose();
  return { dir: outDir, pages };
}

function solutionDiff(lesson: LessonInfo, files: string[], code: (s: string, l: string) => string): string {
  const patches = files
    .filter((f) => existsSync(path.join(solutionsDir, lesson.slug, f)))
    .map((f) => createTwoFilesPatch(
      `lessons/${lesson.slug}/${f}`, `solutions/${lesson.slug}/${f}`,
      readFileSync(path.join(lessonsDir, lesson.slug, f), 'utf8'), readFileSync(path.join(solutionsDir, lesson.slug, f), 'utf8'),
      '', '', { context: 3 },
    ))
    .filter((p) => /\n@@/.test(p));
  return patches.length ? code(patches.join('\n'), 'diff') : '<p>No differences.</p>';
}

function indexBody(lessons: LessonInfo[]): string {
  const rows = lessons.map((l) => `<tr><td>${l.nn}</td><td><a href="${l.slug}.html">${escape(l.title)}</a></td><td>${escape(l.concern)}</td></tr>`).join('');
  return `<h1>Staying Connected</h1>
<p>A workbook that teaches production TCP server engineering on Node.js, in TypeScript, one broken server at a time.
Each lesson is a small TCP server that works on the happy path and carries the mistakes real people make about one concern.
Clone the repository, run <code>npm install</code> and <code>npm start</code>, and fix each server until its tests pass.</p>
<table><thead><tr><th>#</th><th>Lesson</th><th>The concern</th></tr></thead><tbody>${rows}</tbody></table>
<p>Every lesson speaks the same <a href="protocol.html">wire protocol</a>. How the finished gateway measures up against
a naive one and a ws server: <a href="bench.html">the bench</a>.</p>`;
}

function nav(lessons: LessonInfo[], i: number): string {
  const prev = lessons[i - 1];
  const next = lessons[i + 1];
  return `<nav class="pager">${prev ? `<a rel="prev" href="${prev.slug}.html">← ${prev.nn} ${escape(prev.title)}</a>` : '<span></span>'}${next ? `<a rel="next" href="${next.slug}.html">${next.nn} ${escape(next.title)} →</a>` : ''}</nav>`;
}

function page(title: string, body: string, lessons: LessonInfo[]): string {
  const menu = lessons.map((l) => `<li><a href="${l.slug}.html">${l.nn} ${escape(l.title)}</a></li>`).join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(title)}</title><style>${CSS}</style></head>
<body><aside><a class="home" href="index.html">Staying Connected</a><ol>${menu}</ol><a href="protocol.html">The protocol</a><a href="bench.html">The bench</a></aside>
<main>${body}</main></body></html>
`;
}

function escape(text: string): string {
  return text.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}

const CSS = `
:root { color-scheme: light dark; --fg: #1f2328; --bg: #fff; --muted: #59636e; --line: #d1d9e0; --accent: #0969da; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --bg: #0d1117; --muted: #9198a1; --line: #3d444d; --accent: #4493f8; }
  .shiki { background-color: var(--shiki-dark-bg) !important; } .shiki span { color: var(--shiki-dark) !important; } }
body { margin: 0; display: flex; font: 16px/1.6 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
aside { width: 15rem; flex: none; padding: 1.5rem 1rem; border-right: 1px solid var(--line); font-size: 0.9rem; }
aside > a { display: block; margin: 0.3rem 0; } main img { max-width: 100%; height: auto; display: block; margin: 0.5rem 0; }
aside ol { padding-left: 0; list-style: none; } aside li { margin: 0.2rem 0; } aside a { color: var(--fg); text-decoration: none; } .home { font-weight: 600; }
main { max-width: 52rem; padding: 1.5rem 2rem 4rem; min-width: 0; }
a { color: var(--accent); } .concern { font-size: 1.1rem; color: var(--muted); }
pre.shiki { padding: 0.8rem 1rem; border-radius: 6px; overflow-x: auto; font-size: 0.85rem; line-height: 1.45; }
table { border-collapse: collapse; } td, th { border: 1px solid var(--line); padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
details { border: 1px solid var(--line); border-radius: 6px; padding: 0.4rem 0.8rem; margin: 0.6rem 0; }
summary { cursor: pointer; font-weight: 600; }
.pager { display: flex; justify-content: space-between; margin-top: 3rem; }
`;

// Run directly: build and say where the pages are.
if (import.meta.url === `file://${process.argv[1]}`) {
  const site = await buildSite();
  console.log(`${site.pages.length} pages in ${path.relative(projectRoot, site.dir)}/ — open index.html`);
}
