// One of the build's highlighting threads (see highlight.ts): shiki colours its share of the
// site's code blocks and posts the HTML back. Plain JavaScript, so it runs as a worker
// under tsx and under vitest alike.
import { parentPort, workerData } from 'node:worker_threads';
import { createCssVariablesTheme, createHighlighter } from 'shiki';
import { createOnigurumaEngine } from 'shiki/engine/oniguruma';

// One theme whose colours are CSS variables (set in site.css for light and dark): each
// block is tokenized once, not once per theme.
const theme = createCssVariablesTheme({ name: 'workbook', variablePrefix: '--shiki-' });
const highlighter = await createHighlighter({
  themes: [theme],
  langs: workerData.langs,
  // Oniguruma (WebAssembly) tokenizes TypeScript about three times faster than the JS engine.
  engine: await createOnigurumaEngine(import('shiki/wasm')),
});
parentPort.postMessage(workerData.blocks.map(({ code, lang }) => highlighter.codeToHtml(code, { lang, theme: 'workbook' })));
