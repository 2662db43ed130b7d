// npm run verify [-- NN ...]: the workbook checks itself.
//   - every suite passes on solutions/ (lessons and the runtime's own tests);
//   - each lesson, judged alone on lessons/: every baseline test passes and every bug test
//     fails, with a LessonFailure (a TypeError or a timeout is not the lesson failing);
//   - each manifest names tests that exist, and every test it names is a bug test;
//   - tsc --noEmit is clean.
// With WORKBOOK_TARGET=<dir> it judges that tree instead: which manifest bugs it still has.
import { spawn } from 'node:child_process';
import { readManifest, type LessonInfo } from '../lessons.ts';
import { projectRoot } from '../targets/resolve.ts';
import { fixSize } from './diff-size.ts';
import { passedCount, type ProjectResult, type TestOutcome } from './results.ts';
import { pickLessons, runOnce } from './run.ts';

const silent = [{}]; // one reporter that does nothing: an empty list would mean "the defaults"
const started = performance.now();
const args = process.argv.slice(2);
const lessons = pickLessons(args);
const judged = process.env.WORKBOOK_TARGET;

if (judged && judged !== 'lessons' && judged !== 'solutions') await judge(judged);
else await verify();

async function verify() {
  const typecheck = runTypecheck();
  const withRuntime = args.length === 0;
  const solutions = await runOnce({ projects: [...lessons.map((l) => l.slug), ...(withRuntime ? ['runtime'] : [])], target: 'solutions', reporters: silent });
  const exercises = await runOnce({ projects: lessons.map((l) => l.slug), target: 'lessons', reporters: silent });

  const violations: string[] = [];
  const rows: string[][] = [['lesson', 'baseline', 'bug tests failing', 'solution', 'fix (lines, files)', 'seconds']];
  for (const lesson of lessons) {
    const sol = solutions.get(lesson.slug);
    const ex = exercises.get(lesson.slug);
    const problems = judgeLesson(lesson, sol, ex);
    violations.push(...problems.map((p) => `${lesson.slug}: ${p}`));
    const bugTitles = bugTestTitles(lesson);
    const baseline = (ex?.tests ?? []).filter((t) => !bugTitles.has(t.title));
    const bugs = (ex?.tests ?? []).filter((t) => bugTitles.has(t.title));
    rows.push([
      `${problems.length ? '✗' : '✓'} ${lesson.nn} ${lesson.title}`,
      `${baseline.filter((t) => t.state === 'passed').length}/${baseline.length}`,
      `${bugs.filter((t) => t.state === 'failed').length}/${bugTitles.size}`,
      sol ? `${passedCount(sol)}/${sol.tests.length}` : 'missing',
      (({ changed, files }) => `${changed}, ${files}`)(fixSize(lesson.slug)),
      (((sol?.durationMs ?? 0) + (ex?.durationMs ?? 0)) / 1000).toFixed(1),
    ]);
  }
  if (withRuntime) {
    const rt = solutions.get('runtime');
    const failing = rt?.tests.filter((t) => t.state !== 'passed') ?? [];
    if (!rt || failing.length || rt.loadErrors.length) violations.push(...failing.map((t) => `runtime: self-test failed: ${t.fullName}: ${firstLine(t.errorMessage)}`), ...(rt?.loadErrors ?? []).map((e) => `runtime: ${e}`), ...(!rt ? ['runtime: no self-tests ran'] : []));
    rows.push([`${failing.length || !rt ? '✗' : '✓'} runtime self-tests`, '', '', rt ? `${passedCount(rt)}/${rt.tests.length}` : 'missing', '', ((rt?.durationMs ?? 0) / 1000).toFixed(1)]);
  }
  const tc = await typecheck;
  if (!tc.ok) violations.push(`typecheck: tsc --noEmit failed:\n${tc.output}`);
  rows.push([`${tc.ok ? '✓' : '✗'} typecheck (tsc --noEmit)`, '', '', tc.ok ? 'clean' : 'errors', '', (tc.ms / 1000).toFixed(1)]);

  printTable(rows);
  if (violations.length) console.log(`\nViolations:\n${violations.map((v) => `  - ${v.replace(/\n/g, '\n    ')}`).join('\n')}`);
  const checks = rows.length - 1;
  const failed = rows.slice(1).filter((r) => r[0]!.startsWith('✗')).length;
  console.log(`\nverify took ${((performance.now() - started) / 1000).toFixed(1)} s`);
  console.log(`${checks - failed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
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

function runTypecheck(): Promise<{ ok: boolean; output: string; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [`${projectRoot}/node_modules/typescript/bin/tsc`, '--noEmit', '-p', projectRoot], { cwd: projectRoot });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('close', (code) => resolve({ ok: code === 0, output: output.trim().split('\n').slice(0, 20).join('\n'), ms: performance.now() - t0 }));
  });
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
