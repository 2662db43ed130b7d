// npm run verify [-- NN ...]: the workbook checks itself.
//   - every suite passes on solutions/ (lessons and the runtime's own tests);
//   - each lesson, judged alone on lessons/: every baseline test passes and every bug test
//     fails, with a LessonFailure (a TypeError or a timeout is not the lesson failing);
//   - each manifest names tests that exist, and every test it names is a bug test;
//   - each lesson's mistakes catalog is caught and its alternatives pass (catalog.ts);
//     --quick skips the catalogs for a fast loop;
//   - tsc --noEmit is clean, on the project and on every patched tree.
// With WORKBOOK_TARGET=<dir> it judges that tree instead: which manifest bugs it still has.
import { readManifest, type LessonInfo } from '../lessons.ts';
import { projectRoot } from '../targets/resolve.ts';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { catalogRoot, listCatalog, type Judgement } from './catalog.ts';
import { fixSize } from './diff-size.ts';
import { passedCount, type ProjectResult, type TestOutcome } from './results.ts';
import { pickLessons, runCatalog, runOnce, runTypecheck, typecheckTrees } from './run.ts';

/** A catalog smaller than this proves little: the issue asks for at least these. */
const MIN_MISTAKES = 10;
const MIN_ALTERNATIVES = 2;

const silent = [{}]; // one reporter that does nothing: an empty list would mean "the defaults"
const started = performance.now();
// The lessons' test files, like the catalog's, mostly wait on timers and sockets: four at
// a time keep two cores busy where the learner's default of two leaves them half idle.
const LESSON_WORKERS = 4;

const args = process.argv.slice(2);
const lessons = pickLessons(args);
const quick = args.includes('--quick');
const judged = process.env.WORKBOOK_TARGET;

if (judged && judged !== 'lessons' && judged !== 'solutions') await judge(judged);
else await verify();

async function verify() {
  // The exercise of the capstone is judged alone, every other lesson from solutions/: its
  // bug tests must fail for its own wiring, not for an earlier lesson's open bug.
  process.env.WORKBOOK_CAPSTONE_ALONE = '1';
  const typecheck = runTypecheck(projectRoot);
  const withRuntime = lessons.length === pickLessons([]).length;
  const solutions = await runOnce({ projects: [...lessons.map((l) => l.slug), ...(withRuntime ? ['runtime'] : [])], target: 'solutions', reporters: silent, maxWorkers: LESSON_WORKERS });
  const exercises = await runOnce({ projects: lessons.map((l) => l.slug), target: 'lessons', reporters: silent, maxWorkers: LESSON_WORKERS });
  const catalogStarted = performance.now();
  const entries = quick ? [] : lessons.flatMap((l) => listCatalog(l));
  // runCatalog builds every patched tree before it starts vitest, so tsc can check them
  // while the tests run (one process of tsc beside the workers, instead of after them).
  const catalogRun = entries.length ? runCatalog(entries, silent) : Promise.resolve([]);
  const catalogTypecheckRun = entries.length ? typecheckTrees(entries) : undefined;
  const catalog = await catalogRun;
  const catalogTypecheck = await catalogTypecheckRun;
  const catalogSeconds = (performance.now() - catalogStarted) / 1000;
  if (catalog.length) writeReport(catalog);

  const violations: string[] = [];
  const rows: string[][] = [['lesson', 'baseline', 'bug tests failing', 'solution', 'mistakes caught', 'alternatives pass', 'fix (lines, files)', 'seconds']];
  for (const lesson of lessons) {
    const sol = solutions.get(lesson.slug);
    const ex = exercises.get(lesson.slug);
    const problems = judgeLesson(lesson, sol, ex);
    const mine = catalog.filter((j) => j.entry.lesson.slug === lesson.slug);
    if (!quick) problems.push(...judgeCatalog(mine));
    violations.push(...problems.map((p) => `${lesson.slug}: ${p}`));
    const bugTitles = bugTestTitles(lesson);
    const baseline = (ex?.tests ?? []).filter((t) => !bugTitles.has(t.title));
    const bugs = (ex?.tests ?? []).filter((t) => bugTitles.has(t.title));
    rows.push([
      `${problems.length ? '✗' : '✓'} ${lesson.nn} ${lesson.title}`,
      `${baseline.filter((t) => t.state === 'passed').length}/${baseline.length}`,
      `${bugs.filter((t) => t.state === 'failed').length}/${bugTitles.size}`,
      sol ? `${passedCount(sol)}/${sol.tests.length}` : 'missing',
      quick ? 'skipped' : tally(mine, 'mistakes'),
      quick ? 'skipped' : tally(mine, 'alternatives'),
      (({ changed, files }) => `${changed}, ${files}`)(fixSize(lesson.slug)),
      (((sol?.durationMs ?? 0) + (ex?.durationMs ?? 0)) / 1000).toFixed(1),
    ]);
  }
  if (withRuntime) {
    const rt = solutions.get('runtime');
    const failing = rt?.tests.filter((t) => t.state !== 'passed') ?? [];
    if (!rt || failing.length || rt.loadErrors.length) violations.push(...failing.map((t) => `runtime: self-test failed: ${t.fullName}: ${firstLine(t.errorMessage)}`), ...(rt?.loadErrors ?? []).map((e) => `runtime: ${e}`), ...(!rt ? ['runtime: no self-tests ran'] : []));
    rows.push([`${failing.length || !rt ? '✗' : '✓'} runtime self-tests`, '', '', rt ? `${passedCount(rt)}/${rt.tests.length}` : 'missing', '', '', '', ((rt?.durationMs ?? 0) / 1000).toFixed(1)]);
  }
  const tc = await typecheck;
  if (!tc.ok) violations.push(`typecheck: tsc --noEmit failed:\n${tc.output}`);
  rows.push([`${tc.ok ? '✓' : '✗'} typecheck (tsc --noEmit)`, '', '', tc.ok ? 'clean' : 'errors', '', '', '', (tc.ms / 1000).toFixed(1)]);
  if (catalogTypecheck) {
    if (!catalogTypecheck.ok) violations.push(`catalog: a patched tree does not typecheck (a mistake must be a plausible submission, not a compile error):\n${catalogTypecheck.output}`);
    const ok = catalogTypecheck.ok && catalog.every((j) => j.ok);
    rows.push([`${ok ? '✓' : '✗'} catalogs (${entries.length} patched trees, typecheck ${catalogTypecheck.ok ? 'clean' : 'errors'})`, '', '', '', tally(catalog, 'mistakes'), tally(catalog, 'alternatives'), '', catalogSeconds.toFixed(1)]);
  }

  printTable(rows);
  const missed = catalog.filter((j) => j.recordMissed);
  if (missed.length) console.log(`\n${missed.length} mistake(s) were not caught by the tests recorded for them, so every test ran: ${missed.map((j) => `${j.entry.lesson.nn} ${j.entry.name}`).join(', ')}. \`npm run catalog -- NN --record\` records the tests that catch them now.`);
  if (violations.length) console.log(`\nViolations:\n${violations.map((v) => `  - ${v.replace(/\n/g, '\n    ')}`).join('\n')}`);
  const checks = rows.length - 1;
  const failed = rows.slice(1).filter((r) => r[0]!.startsWith('✗')).length;
  console.log(`\nverify took ${((performance.now() - started) / 1000).toFixed(1)} s`);
  console.log(`${checks - failed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

/** Every patch's verdict, for maintainers and tools: which test caught each mistake. */
function writeReport(judged: Judgement[]): void {
  const report = judged.map((j) => ({ lesson: j.entry.lesson.slug, kind: j.entry.kind, name: j.entry.name, ok: j.ok, summary: j.summary, why: j.entry.why }));
  mkdirSync(catalogRoot, { recursive: true });
  writeFileSync(path.join(catalogRoot, 'report.json'), JSON.stringify(report, null, 2));
}

/** "12/12": how many of the lesson's patches of that kind did what they must. */
function tally(judged: Judgement[], kind: 'mistakes' | 'alternatives'): string {
  const mine = judged.filter((j) => j.entry.kind === kind);
  return `${mine.filter((j) => j.ok).length}/${mine.length}`;
}

/** A mistake that survives, an alternative rejected, or a catalog too small to prove much. */
function judgeCatalog(judged: Judgement[]): string[] {
  const problems = judged.filter((j) => !j.ok).map((j) => `${j.entry.kind}/${j.entry.name}.patch: ${j.summary}`);
  const count = (kind: string) => judged.filter((j) => j.entry.kind === kind).length;
  if (count('mistakes') < MIN_MISTAKES) problems.push(`the mistakes catalog has ${count('mistakes')} patch(es); at least ${MIN_MISTAKES} are needed (solutions/<lesson>/mistakes/*.patch)`);
  if (count('alternatives') < MIN_ALTERNATIVES) problems.push(`${count('alternatives')} correct alternative(s); at least ${MIN_ALTERNATIVES} are needed (solutions/<lesson>/alternatives/*.patch)`);
  return problems;
}

/** Everything wrong with one lesson, in words a maintainer can act on. */
function judgeLesson(lesson: LessonInfo, sol: ProjectResult | undefined, ex: ProjectResult | undefined): string[] {
  const problems: string[] = lesson.problem ? [lesson.problem] : [];
  if (!lesson.hints.length) problems.push('README.md front matter has no hints');
  const manifest = readManifest(lesson.slug);
  if (!manifest) return [`no manifest at solutions/${lesson.slug}/manifest.json`];
  if (!sol || !ex) return [`its tests did not run (is there a test/${lesson.slug}.test.ts?)`];
  for (const e of [...sol.loadErrors, ...ex.loadErrors]) problems.push(`a test file failed to load: ${e}`);
  for (const t of sol.tests.filter((t) => t.state !== 'passed')) problems.push(`fails on solutions/: "${t.title}": ${firstLine(t.errorMessage)}`);

  const titles = ex.tests.map((t) => t.title);
  for (const dup of new Set(titles.filter((t, i) => titles.indexOf(t) !== i))) problems.push(`two tests share the title "${dup}" (manifests name tests by title)`);
  for (const bug of manifest.bugs) {
    if (!bug.tests.length) problems.push(`bug "${bug.id}" names no test`);
    for (const title of bug.tests) if (!titles.includes(title)) problems.push(`bug "${bug.id}" names a test that does not exist: "${title}"`);
  }
  const bugTitles = bugTestTitles(lesson);
  for (const t of ex.tests) {
    if (bugTitles.has(t.title)) {
      if (t.state === 'passed') problems.push(`bug test passes on the exercise, so it cannot see its bug: "${t.title}"`);
      else if (t.state === 'failed' && t.errorName !== 'LessonFailure') problems.push(`bug test fails on the exercise with ${t.errorName}, not a LessonFailure (not for the lesson's reason): "${t.title}": ${firstLine(t.errorMessage)}`);
    } else if (t.state !== 'passed') {
      problems.push(`baseline test fails on the exercise: "${t.title}": ${firstLine(t.errorMessage)}`);
    }
  }
  return problems;
}

/** WORKBOOK_TARGET=<dir>: which of the manifests' bugs another tree still has. */
async function judge(target: string) {
  const results = await runOnce({ projects: lessons.map((l) => l.slug), target, reporters: silent });
  const rows = [['lesson', 'passing', 'bugs still present']];
  let failed = 0;
  for (const lesson of lessons) {
    const r = results.get(lesson.slug);
    const failing = new Set((r?.tests ?? []).filter((t) => t.state !== 'passed').map((t) => t.title));
    const present = (readManifest(lesson.slug)?.bugs ?? []).filter((b) => b.tests.some((t) => failing.has(t))).map((b) => b.id);
    const other = [...failing].filter((t) => !bugTestTitles(lesson).has(t));
    const ok = !!r && failing.size === 0 && r.loadErrors.length === 0;
    if (!ok) failed++;
    rows.push([`${ok ? '✓' : '✗'} ${lesson.nn} ${lesson.title}`, r ? `${passedCount(r)}/${r.tests.length}` : 'did not run', [...present, ...other.map((t) => `baseline: ${t}`)].join(', ') || 'none']);
  }
  console.log(`Judging ${target} against the manifests (each lesson in isolation).\n`);
  printTable(rows);
  console.log(`\n${lessons.length - failed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

function bugTestTitles(lesson: LessonInfo): Set<string> {
  return new Set((readManifest(lesson.slug)?.bugs ?? []).flatMap((b) => b.tests));
}

function printTable(rows: string[][]) {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  rows.forEach((r, n) => {
    console.log(r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('   '));
    if (n === 0) console.log(widths.map((w) => '-'.repeat(w)).join('   '));
  });
}

function firstLine(text: TestOutcome['errorMessage']): string {
  return (text ?? '').split('\n')[0]!;
}
