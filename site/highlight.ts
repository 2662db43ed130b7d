// Code highlighting for the whole site in one pass. Pages are rendered with a placeholder
// where each code block goes; then shiki colours every block on worker threads, one per
// core (most of the build's time is tokenizing the lessons' test files), and the
// placeholders are swapped for the result.
import os from 'node:os';
import { Worker } from 'node:worker_threads';

// Only the languages the pages use: loading all of shiki's costs seconds.
const LANGUAGES = ['typescript', 'bash', 'json', 'diff'];
const ALIASES: Record<string, string> = { ts: 'typescript', sh: 'bash', shell: 'bash' };

interface Block {
  code: string;
  lang: string;
}

export class CodeBlocks {
  private readonly blocks: Block[] = [];

  /** Where the block will go: an empty <pre> to be replaced by `highlightAll`. */
  add(code: string, lang: string): string {
    const name = ALIASES[lang] ?? lang;
    this.blocks.push({ code, lang: LANGUAGES.includes(name) ? name : 'text' });
    return `<pre data-code="${this.blocks.length - 1}"></pre>`;
  }

  /** Highlights every block added so far; returns the function that fills a page's placeholders. */
  async highlightAll(): Promise<(html: string) => string> {
    const threads = Math.max(1, Math.min(os.availableParallelism(), 4));
    // Deal the blocks out largest first, each to the thread with the least so far.
    const shares = Array.from({ length: threads }, () => ({ size: 0, indexes: [] as number[] }));
    [...this.blocks.keys()].sort((a, b) => this.blocks[b]!.code.length - this.blocks[a]!.code.length).forEach((i) => {
      const share = shares.reduce((least, s) => (s.size < least.size ? s : least));
      share.size += this.blocks[i]!.code.length;
      share.indexes.push(i);
    });
    const html: string[] = [];
    await Promise.all(shares.filter((s) => s.indexes.length).map(async (share) => {
      const done = await runWorker(share.indexes.map((i) => this.blocks[i]!));
      share.indexes.forEach((i, n) => (html[i] = done[n]!));
    }));
    return (page) => page.replace(/<pre data-code="(\d+)"><\/pre>/g, (_, i: string) => html[Number(i)]!);
  }
}

function runWorker(blocks: Block[]): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./highlight-worker.mjs', import.meta.url), { workerData: { langs: LANGUAGES, blocks } });
    worker.once('message', (html: string[]) => { resolve(html); void worker.terminate(); });
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`a highlighting thread exited with code ${code} before it answered`)));
  });
}
