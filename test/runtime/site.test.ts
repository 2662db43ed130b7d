// The readers' site builds, and every page it makes holds what a reader comes for.
import { describe, expect, test } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildSite } from '../../site/build.ts';
import { listLessons } from '../../runtime/lessons.ts';

describe('site', () => {
  // Seconds on a quiet machine; a generous bound for one whose cores are busy (verify runs
  // the bench and cluster tests beside it).
  test('builds a page per lesson with its text, code, tests, hints and solution diff; every link resolves', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'workbook-site-'));
    try {
      const site = await buildSite(dir);
      const lessons = listLessons();
      expect(site.pages).toEqual(['index.html', 'protocol.html', 'bench.html', ...lessons.map((l) => `${l.slug}.html`)]);
      // The bench page shows the charts the last full run drew.
      for (const [, src] of readFileSync(path.join(dir, 'bench.html'), 'utf8').matchAll(/<img src="([^"]+)"/g)) {
        expect(existsSync(path.join(dir, src!)), `bench.html shows ${src}`).toBe(true);
      }
      expect(readFileSync(path.join(dir, 'bench.html'), 'utf8')).toMatch(/<img src="charts\/[\w-]+\.svg"/);
      for (const lesson of lessons) {
        const html = readFileSync(path.join(dir, `${lesson.slug}.html`), 'utf8');
        expect(html).toContain(`<h1>${lesson.nn} · `);
        expect(html).toContain('class="shiki'); // highlighted code
        expect(html).toContain(`test/${lesson.slug}.test.ts`);
        expect(html.match(/<details class="hint">/g)?.length).toBe(lesson.hints.length);
        expect(html).toMatch(/<details class="solution">[\s\S]*solutions\//);
      }
      for (const page of site.pages) {
        const html = readFileSync(path.join(dir, page), 'utf8');
        for (const [, href] of html.matchAll(/href="([^"#:]+)"/g)) {
          expect(existsSync(path.join(dir, href!)), `${page} links to ${href}`).toBe(true);
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
