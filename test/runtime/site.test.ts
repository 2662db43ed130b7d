// The readers' site: it builds, every page holds what a reader comes for, and, in Debian's
// Chromium driven by playwright-core, it reads well on a phone and on a laptop: no console
// error, no failed request, nothing wider than the screen, a menu, search, hints one at a
// time, the solution behind a click, links that land. Screenshots of every page at both
// widths go to site/dist/screenshots/ for a person to look at.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { buildSite, type BuiltSite } from '../../site/build.ts';
import { serveSite, type ServedSite } from '../../site/serve.ts';
import { listLessons } from '../../runtime/lessons.ts';

// The callbacks given to page.evaluate run in the page, with the browser's globals. The
// project is typed for Node (no DOM lib), so they are declared here, for this file only.
declare const document: any, window: object, navigator: { clipboard: { readText(): Promise<string> } };
declare function getComputedStyle(element: unknown): { backgroundColor: string };

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const WIDTHS = { phone: 390, laptop: 1280 } as const;
const lessons = listLessons();
let site: BuiltSite;

beforeAll(async () => {
  site = await buildSite();
}, 120_000);

describe('site', () => {
  test('builds a page per lesson with its text, code, tests, hints and solution diff, and the reference pages', () => {
    expect(site.pages).toEqual([
      'index.html', ...lessons.map((l) => `${l.slug}.html`), 'modules.html', 'protocol.html', 'operations.html', 'bench.html',
    ]);
    const read = (page: string) => readFileSync(path.join(site.dir, page), 'utf8');
    for (const lesson of lessons) {
      const html = read(`${lesson.slug}.html`);
      expect(html).toContain(`<h1>${lesson.nn} · `);
      expect(html, `${lesson.slug}: highlighted code`).toContain('class="shiki');
      expect(html).not.toContain('<pre data-code='); // every placeholder filled
      expect(html).toContain(`test/${lesson.slug}.test.ts`);
      expect(html.match(/<details class="hint"/g)?.length).toBe(lesson.hints.length);
      expect(html).toMatch(/<details class="solution">[\s\S]*solutions\//);
    }
    // The diagrams are SVG drawn at build time, with no request off the site's own host.
    for (const page of ['01-close-leaks.html', '04-heartbeat.html', '07-pooling.html', 'modules.html', 'protocol.html']) {
      expect(read(page), `${page} has a diagram`).toMatch(/<figure class="diagram"[^>]*><svg/);
    }
    expect(site.pages.map(read).join('')).not.toMatch(/@import url|fonts\.googleapis/);
    expect(read('bench.html')).toMatch(/<img src="charts\/[\w-]+\.svg"/);
    expect(site.searchDocuments).toBeGreaterThan(50);
  });
});

describe.skipIf(!existsSync(CHROMIUM))('site in Chromium', () => {
  let browser: Browser;
  let served: ServedSite;
  const contexts: BrowserContext[] = [];
  const shots = () => path.join(site.dir, 'screenshots');

  beforeAll(async () => {
    served = await serveSite(site.dir);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      // Headless is Playwright's default. Nothing leaves the machine: no sync, no updates.
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--disable-default-apps'],
    });
    mkdirSync(shots(), { recursive: true });
  }, 60_000);

  afterAll(async () => {
    for (const c of contexts) await c.close();
    await browser?.close();
    await served?.close();
  });

  async function open(width: number): Promise<{ context: BrowserContext; page: Page; problems: string[] }> {
    const context = await browser.newContext({ viewport: { width, height: 800 } });
    contexts.push(context);
    const page = await context.newPage();
    // Everything that would show in the browser's console as a problem.
    const problems: string[] = [];
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`uncaught: ${e.message}`));
    // ERR_ABORTED is a load cut short by the next navigation (a favicon, say), not a missing file.
    page.on('requestfailed', (r) => { if (r.failure()?.errorText !== 'net::ERR_ABORTED') problems.push(`request failed: ${r.url()} (${r.failure()?.errorText})`); });
    page.on('response', (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`); });
    return { context, page, problems };
  }

  // What sticks out past the right edge of the window, named so it can be found.
  const overflow = (page: Page) => page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    if (document.documentElement.scrollWidth <= width) return [];
    return [...document.querySelectorAll('body *')]
      .filter((e) => e.getBoundingClientRect().right > width + 1 && !e.closest('pre, .table-scroll, figure.diagram'))
      .slice(0, 5)
      .map((e) => `<${e.tagName.toLowerCase()}${e.id ? `#${e.id}` : ''}${e.className && typeof e.className === 'string' ? `.${e.className.split(' ').join('.')}` : ''}> right edge at ${Math.round(e.getBoundingClientRect().right)} px`);
  });

  for (const [name, width] of Object.entries(WIDTHS)) {
    test(`at ${width} px (${name}) every page loads with no console error or failed request, and nothing is wider than the screen`, async () => {
      const { page, problems } = await open(width);
      for (const file of site.pages) {
        await page.goto(served.url + file, { waitUntil: 'load' });
        // Load the search index too: its requests count.
        await page.focus('#search');
        await page.waitForFunction(() => 'WORKBOOK_SEARCH' in window, undefined, { timeout: 10_000 });
        expect(problems, `${file} at ${width} px: the browser reported problems`).toEqual([]);
        expect(await overflow(page), `${file} at ${width} px: the page scrolls sideways because of`).toEqual([]);
        // Diagrams are drawn, and fit.
        for (const box of await page.locator('figure.diagram svg').evaluateAll((svgs) => svgs.map((s) => s.getBoundingClientRect().toJSON()))) {
          expect(box.width, `${file}: a diagram was drawn with no width`).toBeGreaterThan(100);
          expect(box.right, `${file}: a diagram is wider than the screen`).toBeLessThanOrEqual(width);
        }
        await page.screenshot({ path: path.join(shots(), `${file.replace('.html', '')}-${width}.png`), fullPage: true });
      }
    }, 180_000);
  }

  test('on a phone the lessons hide behind a menu button that opens them', async () => {
    const { page } = await open(WIDTHS.phone);
    await page.goto(`${served.url}05-single-writer.html`);
    const sidebar = page.locator('#sidebar');
    const button = page.locator('.menu-button');
    await expect.poll(() => sidebar.isVisible(), { message: 'the sidebar is hidden on a phone until asked for' }).toBe(false);
    await button.click();
    await expect.poll(() => sidebar.isVisible(), { message: 'the menu button shows the sidebar' }).toBe(true);
    expect(await button.getAttribute('aria-expanded')).toBe('true');
    await sidebar.getByRole('link', { name: /06 Limits/ }).click();
    await expect.poll(() => page.url()).toMatch(/06-limits\.html$/);
    expect(await page.locator('#sidebar').isVisible(), 'the menu is closed on the new page').toBe(false);
  });

  test('the current page is marked, and on a laptop an "on this page" list links its sections', async () => {
    const { page } = await open(WIDTHS.laptop);
    await page.goto(`${served.url}03-deadlines.html`);
    expect(await page.locator('#sidebar a[aria-current="page"]').allTextContents()).toEqual(['03 Deadlines']);
    const toc = page.locator('nav.toc');
    expect(await toc.isVisible()).toBe(true);
    const hrefs = await toc.locator('a').evaluateAll((as) => as.map((a) => a.getAttribute('href')!));
    expect(hrefs.length).toBeGreaterThanOrEqual(4);
    for (const href of hrefs) expect(await page.locator(`[id="${href.slice(1)}"]`).count(), `the section ${href}`).toBe(1);
    expect(await page.locator('.pager a[rel="prev"]').getAttribute('href')).toBe('02-framing.html');
    expect(await page.locator('.pager a[rel="next"]').getAttribute('href')).toBe('04-heartbeat.html');
  });

  test('hints open one at a time, and the solution diff stays hidden until asked for', async () => {
    const { page } = await open(WIDTHS.laptop);
    await page.goto(`${served.url}05-single-writer.html`);
    const hints = page.locator('details.hint');
    const visible = () => hints.evaluateAll((ds) => ds.filter((d) => (d as unknown as { offsetParent: unknown }).offsetParent !== null).length);
    expect(await hints.count()).toBeGreaterThanOrEqual(3);
    expect(await visible(), 'only the first hint is offered at first').toBe(1);
    expect(await hints.nth(0).locator('p').first().isVisible(), 'the first hint is closed').toBe(false);
    await hints.nth(0).locator('summary').click();
    expect(await hints.nth(0).locator('p').first().isVisible()).toBe(true);
    // The next hint is offered by the page's 'toggle' handler, which the browser runs as a
    // task of its own after the click: poll for it rather than read once.
    await expect.poll(visible, { message: 'opening hint 1 offers hint 2, and only hint 2' }).toBe(2);
    await hints.nth(1).locator('summary').click();
    await expect.poll(visible, { message: 'opening hint 2 offers hint 3' }).toBe(3);
    const diff = page.locator('details.solution pre');
    expect(await diff.isVisible(), 'the solution diff is hidden').toBe(false);
    await page.locator('details.solution summary').click();
    expect(await diff.isVisible(), 'a click shows the solution diff').toBe(true);
  });

  async function searchLands(page: Page, query: string, expected: RegExp) {
    await page.locator('#search').fill(query);
    const first = page.locator('#search-results a').first();
    await first.waitFor({ timeout: 10_000 });
    expect(await first.getAttribute('href'), `the first result for "${query}"`).toMatch(expected);
    await page.locator('#search').press('Enter');
    await expect.poll(() => page.url(), { message: `Enter on the first result for "${query}"` }).toMatch(expected);
    await page.waitForLoadState('load');
  }

  test('a search for "backpressure" lands on lesson 05, served and from file://', async () => {
    const { page, problems } = await open(WIDTHS.phone);
    await page.goto(`${served.url}index.html`);
    await searchLands(page, 'backpressure', /05-single-writer\.html/);
    await page.goto(pathToFileURL(path.join(site.dir, 'index.html')).href);
    await searchLands(page, 'backpressure', /05-single-writer\.html/);
    await page.goto(`${served.url}index.html`);
    await searchLands(page, 'GOAWAY', /(08-graceful-shutdown|protocol)\.html/);
    expect(problems).toEqual([]);
  });

  test('the theme follows the toggle and is remembered', async () => {
    const { page } = await open(WIDTHS.laptop);
    await page.goto(`${served.url}04-heartbeat.html`);
    const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const before = await background();
    await page.locator('.theme-toggle').click();
    const after = await background();
    expect(after, 'the toggle changes the colours').not.toBe(before);
    await page.reload();
    expect(await background(), 'the choice survives a reload').toBe(after);
    await page.locator('.theme-toggle').click();
    expect(await background()).toBe(before);
  });

  test('a code block has a copy button that copies it', async () => {
    const { context, page } = await open(WIDTHS.laptop);
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: served.url.replace(/\/$/, '') });
    await page.goto(`${served.url}02-framing.html`);
    const block = page.locator('div.code').first();
    await block.locator('.copy').click();
    await expect.poll(() => block.locator('.copy').textContent()).toBe('Copied');
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(await block.locator('pre').innerText());
  });

  test('every link between pages lands on a page, and every #section on an element with that id', async () => {
    const { page } = await open(WIDTHS.laptop);
    const ids = new Map<string, Set<string>>();
    const links: Array<{ from: string; href: string }> = [];
    for (const file of site.pages) {
      await page.goto(served.url + file);
      ids.set(file, new Set(await page.locator('[id]').evaluateAll((es) => es.map((e) => e.id))));
      for (const href of await page.locator('a[href]').evaluateAll((as) => as.map((a) => a.getAttribute('href')!))) {
        if (!/^[a-z]+:/i.test(href)) links.push({ from: file, href });
      }
    }
    const broken = links.filter(({ from, href }) => {
      const [file, hash] = href.split('#');
      const target = file || from;
      return !ids.has(target) || (hash !== undefined && hash !== '' && !ids.get(target)!.has(decodeURIComponent(hash)));
    });
    expect(broken.map(({ from, href }) => `${from} → ${href}`)).toEqual([]);
    expect(links.length).toBeGreaterThan(200);
  }, 60_000);
});
