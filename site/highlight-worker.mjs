// One of the build's highlighting threads (see highlight.ts): shiki colours each code block
// it is sent and posts the HTML back. Plain JavaScript, so it runs as a worker under tsx and
// under vitest alike.
import { parentPort, workerData } from 'node:worker_threads';
import { createCssVariablesTheme, createHighlighter } from 'shiki';
import { createOnigurumaEngine } from 'shiki/engine/oniguruma';

// One theme whose colours are CSS variables (set in site.css for light and dark): each
// block is tokenized once, not once per theme.
const theme = createCssVariablesTheme({ name: 'workbook', variablePrefix: '--shiki-' });
// Loaded while the pages are still being written; blocks that arrive meanwhile wait for it.
const ready = createHighlighter({
  themes: [theme],
  langs: workerData.langs,
  // Oniguruma (WebAssembly) tokenizes TypeScript about three times faster than the JS engine.
  engine: createOnigurumaEngine(import('shiki/wasm')),
});
// Messages are answered in the order they came: each waits for the same `ready`.
parentPort.on('message', async (message) => {
  const highlighter = await ready;
  if (message === 'end') return parentPort.postMessage({ end: true });
  parentPort.postMessage({ index: message.index, html: highlighter.codeToHtml(message.code, { lang: message.lang, theme: 'workbook' }) });
});
