// Code highlighting for the whole site. Pages are written with a placeholder where each
// code block goes, and each block goes at once to one of the worker threads (one per
// core), which colour it with shiki while the main thread goes on writing pages and drawing
// diagrams. Most of the build's time is tokenizing the lessons' test files.
import os from 'node:os';
import { Worker } from 'node:worker_threads';

// Only the languages the pages use: loading all of shiki's costs seconds.
const LANGUAGES = ['typescript', 'bash', 'json', 'diff'];
const ALIASES: Record<string, string> = { ts: 'typescript', sh: 'bash', shell: 'bash' };

interface Thread {
  worker: Worker;
  /** Characters sent so far: the next block goes to the thread with the fewest. */
  load: number;
  ended: Promise<void>;
}

export class CodeBlocks {
  private readonly html: string[] = [];
  private readonly threads: Thread[];
  private count = 0;

  constructor() {
    const size = Math.max(1, Math.min(os.availableParallelism(), 4));
    this.threads = Array.from({ length: size }, () => {
      const worker = new Worker(new URL('./highlight-worker.mjs', import.meta.url), { workerData: { langs: LANGUAGES } });
      const ended = new Promise<void>((resolve, reject) => {
        worker.on('message', (m: { index: number; html: string } | { end: true }) => ('end' in m ? resolve() : (this.html[m.index] = m.html)));
        worker.once('error', reject);
        worker.once('exit', (code) => reject(new Error(`a highlighting thread exited with code ${code} before it finished`)));
      });
      ended.catch(() => {}); // reported by highlightAll()
      return { worker, load: 0, ended };
    });
  }

  /** Where the block will go: an empty <pre> that `highlightAll` fills. */
  add(code: string, lang: string): string {
    const name = ALIASES[lang] ?? lang;
    const index = this.count++;
    const thread = this.threads.reduce((least, t) => (t.load < least.load ? t : least));
    thread.load += code.length;
    thread.worker.postMessage({ index, code, lang: LANGUAGES.includes(name) ? name : 'text' });
    return `<pre data-code="${index}"></pre>`;
  }

  /** Waits for every block sent so far; returns the function that fills a page's placeholders. */
  async highlightAll(): Promise<(page: string) => string> {
    for (const t of this.threads) t.worker.postMessage('end');
    await Promise.all(this.threads.map((t) => t.ended));
    return (page) => page.replace(/<pre data-code="(\d+)"><\/pre>/g, (_, i: string) => this.html[Number(i)]!);
  }

  /** Ends the threads (after highlightAll, or when the build failed before it). */
  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.worker.terminate()));
  }
}
