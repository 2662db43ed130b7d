// The mistakes catalog: test strength as a property the workbook proves about itself.
// Each lesson keeps, beside its solution, plausible wrong fixes (mistakes/*.patch) and
// correct fixes written differently (alternatives/*.patch). Every patch is applied to a
// copy of the lesson's solution; a mistake must make at least one test fail with a
// LessonFailure, an alternative must pass everything. It is mutation testing with the
// mistakes people make instead of operator flips.
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { applyPatch, parsePatch } from 'diff';
import type { LessonInfo } from '../lessons.ts';
import { projectRoot, solutionsDir } from '../targets/resolve.ts';
import type { ProjectResult, TestOutcome } from './results.ts';

export type PatchKind = 'mistakes' | 'alternatives';

export interface CatalogEntry {
  lesson: LessonInfo;
  kind: PatchKind;
  /** The patch file's name without .patch. */
  name: string;
  file: string;
  /** The comment lines at the top of the patch: the mistake in plain words. */
  why: string;
  /** vitest project name for this patched tree. */
  project: string;
  /** The directory laid out like lessons/ that holds the patched lesson. */
  tree: string;
  /** For a mistake: the tests recorded as catching it (caught-by.json), which verify runs first. */
  catchers?: string[];
}

/** Where patched trees are built: inside the project, so they are ESM like the rest. */
export const catalogRoot = path.join(projectRoot, '.workbook', 'catalog');

/**
 * The plan vitest.config.ts reads (its path in WORKBOOK_CATALOG) to add one project per
 * patched tree. One file per run, so two runs at once do not read each other's plan.
 */
export const planFile = path.join(catalogRoot, `plan-${process.pid}.json`);

export interface PlannedProject {
  project: string;
  tree: string;
  nn: string;
  slug: string;
  /** Skip a mistake's remaining tests once one has caught it (see catalog-setup.ts). */
  stopAtFirstCatch: boolean;
  /** Run these tests alone: the ones recorded as catching the mistake. */
  only?: string[];
}

/**
 * Which tests catch each mistake, per lesson: solutions/NN-slug/mistakes/caught-by.json,
 * written by `npm run catalog -- --record`: the first two tests in the file that caught it.
 * verify runs only those (the second only if the first did not catch it) and falls back to
 * every test when they no longer catch it: a record can make verify faster, never make a
 * mistake look caught. Two, because a test that catches a mistake by its timing may miss
 * it now and then.
 */
const recordFile = (root: string, slug: string) => path.join(root, slug, 'mistakes', 'caught-by.json');

function readRecord(root: string, slug: string): Record<string, string[]> {
  const file = recordFile(root, slug);
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Record<string, string[]>) : {};
}

/** Records, for each caught mistake, the first two tests in the file that caught it. */
export function writeRecord(judged: Judgement[], root = solutionsDir): string[] {
  const written: string[] = [];
  for (const slug of new Set(judged.map((j) => j.entry.lesson.slug))) {
    const record: Record<string, string[]> = {};
    for (const j of judged.filter((j) => j.entry.lesson.slug === slug && j.entry.kind === 'mistakes' && j.ok).sort((a, b) => a.entry.name.localeCompare(b.entry.name))) {
      const catchers = j.failures.filter((f) => f.errorName === 'LessonFailure').slice(0, 2);
      if (catchers.length) record[j.entry.name] = catchers.map((f) => f.title);
    }
    const file = recordFile(root, slug);
    writeFileSync(file, `${JSON.stringify(record, null, 2)}\n`);
    written.push(path.relative(projectRoot, file));
  }
  return written;
}

/**
 * A lesson's patches. `root` is a tree laid out like solutions/ (`<root>/NN-slug/mistakes/*.patch`):
 * solutions/ itself by default, or a held-out set kept elsewhere.
 */
export function listCatalog(lesson: LessonInfo, kinds: PatchKind[] = ['mistakes', 'alternatives'], root = solutionsDir): CatalogEntry[] {
  return kinds.flatMap((kind) => {
    const dir = path.join(root, lesson.slug, kind);
    if (!existsSync(dir)) return [];
    const record = kind === 'mistakes' ? readRecord(root, lesson.slug) : {};
    return readdirSync(dir)
      .filter((f) => f.endsWith('.patch'))
      .sort()
      .map((f) => {
        const name = f.slice(0, -'.patch'.length);
        const file = path.join(dir, f);
        // Patches from a held-out set get trees of their own, apart from the catalog's.
        const set = root === solutionsDir ? [] : [`from-${path.basename(root)}`];
        return {
          lesson,
          kind,
          name,
          file,
          why: patchComment(readFileSync(file, 'utf8')),
          project: ['catalog', ...set, lesson.slug, kind, name].join('/'),
          tree: path.join(catalogRoot, ...set, lesson.slug, kind, name),
          ...(record[name]?.length ? { catchers: record[name] } : {}),
        };
      });
  });
}

/** The leading `#` lines of a patch, joined: what the mistake is and why it hurts. */
export function patchComment(text: string): string {
  const lines: string[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('#')) break;
    lines.push(line.replace(/^#\s?/, ''));
  }
  return lines.join(' ').replace(/\s+/g, ' ').trim();
}

/**
 * Copies the lesson's solution into the entry's tree and applies the patch there (paths in
 * the patch are relative to the lesson folder, as `patch -p1` reads them). Throws with the
 * patch's name when it does not apply: a stale patch must not pass silently.
 */
export function buildTree(entry: CatalogEntry): void {
  const { slug } = entry.lesson;
  const dest = path.join(entry.tree, slug);
  rmSync(entry.tree, { recursive: true, force: true });
  // The whole solutions tree (minus catalogs), so the patched lesson's imports of earlier
  // lessons resolve inside its own tree, for tsc as for the tests.
  cpSync(solutionsDir, entry.tree, {
    recursive: true,
    filter: (src) => !/[\\/](mistakes|alternatives)$/.test(src) && !src.endsWith('manifest.json'),
  });
  const patches = parsePatch(readFileSync(entry.file, 'utf8'));
  if (!patches.length || patches.every((p) => !p.hunks.length)) throw new Error(`${entry.kind}/${entry.name}.patch has no hunks`);
  for (const p of patches) {
    const rel = stripPrefix(p.newFileName ?? p.oldFileName);
    const target = path.join(dest, rel);
    const before = existsSync(target) ? readFileSync(target, 'utf8') : '';
    const after = applyPatch(before, p);
    if (after === false) throw new Error(`${entry.kind}/${entry.name}.patch does not apply to solutions/${slug}/${rel} (was the solution changed? regenerate the patch)`);
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, after);
  }
}

function stripPrefix(name: string | undefined): string {
  if (!name || name === '/dev/null') throw new Error('a patch names no file');
  return name.replace(/^[ab]\//, '');
}

/** `only`: the entries to run on their recorded catchers alone. */
export function writePlan(entries: CatalogEntry[], { everyTest = false, only = new Set<CatalogEntry>() } = {}): void {
  mkdirSync(catalogRoot, { recursive: true });
  const plan: PlannedProject[] = entries.map((e) => ({
    project: e.project, tree: e.tree, nn: e.lesson.nn, slug: e.lesson.slug,
    stopAtFirstCatch: !everyTest && e.kind === 'mistakes',
    ...(only.has(e) ? { only: e.catchers } : {}),
  }));
  writeFileSync(planFile, JSON.stringify(plan, null, 2));
}

export function readPlan(file: string | undefined): PlannedProject[] {
  return file && existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as PlannedProject[]) : [];
}

export interface Judgement {
  entry: CatalogEntry;
  ok: boolean;
  /** One line for the maintainer: why it is fine, or what is wrong. */
  summary: string;
  /** The tests that failed, with the first line of each error. */
  failures: Array<{ title: string; errorName: string; firstLine: string }>;
  /** A mistake its recorded tests no longer caught, judged again on every test. */
  recordMissed?: boolean;
}

/** A mistake must be caught by a LessonFailure; an alternative must pass every test. */
export function judgeEntry(entry: CatalogEntry, result: ProjectResult | undefined): Judgement {
  const failed = (result?.tests ?? []).filter((t) => t.state === 'failed');
  const failures = failed.map((t) => ({ title: t.title, errorName: t.errorName ?? 'Error', firstLine: firstLine(t) }));
  if (!result || !result.tests.length) return { entry, ok: false, summary: 'its tests did not run', failures };
  if (result.loadErrors.length) return { entry, ok: false, summary: `the test file did not load: ${result.loadErrors[0]}`, failures };
  if (entry.kind === 'alternatives') {
    const notPassed = result.tests.filter((t) => t.state !== 'passed');
    if (!notPassed.length) return { entry, ok: true, summary: `passes all ${result.tests.length} tests`, failures };
    return { entry, ok: false, summary: `a correct alternative is rejected by ${notPassed.length} test(s): ${notPassed.map((t) => `"${t.title}" (${firstLine(t)})`).join('; ')}`, failures };
  }
  // A mistake must misbehave, not break: a TypeError means the patch is a slip, not a wrong fix.
  const slips = failures.filter((f) => /^(TypeError|ReferenceError|SyntaxError)$/.test(f.errorName));
  if (slips.length) return { entry, ok: false, summary: `breaks instead of misbehaving (${slips.map((f) => `"${f.title}": ${f.errorName}: ${f.firstLine}`).join('; ')})`, failures };
  const lessonFailures = failures.filter((f) => f.errorName === 'LessonFailure');
  if (lessonFailures.length) return { entry, ok: true, summary: `caught by ${lessonFailures.map((f) => `"${f.title}"`).join(', ')}`, failures };
  if (failures.length) return { entry, ok: false, summary: `fails only without a LessonFailure (not for the lesson's reason): ${failures.map((f) => `"${f.title}": ${f.errorName}: ${f.firstLine}`).join('; ')}`, failures };
  return { entry, ok: false, summary: `survives: every test passes (${entry.why || 'no comment in the patch'})`, failures };
}

function firstLine(t: TestOutcome): string {
  return (t.errorMessage ?? '').split('\n')[0]!;
}
