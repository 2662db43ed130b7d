// The learner's reporter: a progress row per lesson, the first failure in full (it says
// what was observed, what was expected and the idea at stake), where the next hint is,
// and a plain closing line "N passed, M failed".
import type { Reporter, TestModule, Vitest } from 'vitest/node';
import { listLessons, type LessonInfo } from '../lessons.ts';
import { changedFiles } from '../cli/checksums.ts';
import { readProgress, writeProgress } from '../cli/state.ts';
import { groupByProject, isSolved, passedCount, type ProjectResult } from '../cli/results.ts';

export interface ProgressReporterOptions {
  /** Called after each run with the results, by lesson slug (npm start uses it). */
  onResults?: (results: Map<string, ProjectResult>) => void;
}

export default class ProgressReporter implements Reporter {
  private vitest!: Vitest;

  constructor(private readonly options: ProgressReporterOptions = {}) {}

  onInit(vitest: Vitest): void {
    this.vitest = vitest;
  }

  onTestRunEnd(): void {
    // In watch mode a rerun hands us only the files it reran; the state has them all.
    const modules: readonly TestModule[] = this.vitest.state.getTestModules();
    const results = groupByProject(modules);
    const lessons = listLessons().filter((l) => results.has(l.slug));
    const progress = readProgress();
    const out: string[] = ['', 'Staying Connected: progress', ''];

    const width = Math.max(0, ...lessons.map((l) => l.title.length)) + 2;
    for (const lesson of lessons) {
      const r = results.get(lesson.slug)!;
      progress.lessons[lesson.slug] = { passed: passedCount(r), total: r.tests.length, at: new Date().toISOString() };
      const mark = isSolved(r) ? '✔' : ' ';
      const count = r.loadErrors.length ? 'does not load' : `${passedCount(r)}/${r.tests.length}`;
      out.push(` ${mark} ${lesson.nn} ${lesson.title.padEnd(width)} ${count}`);
    }
    writeProgress(progress);

    const firstUnsolved = lessons.find((l) => !isSolved(results.get(l.slug)!));
    if (firstUnsolved) out.push('', ...this.describeFailure(firstUnsolved, results.get(firstUnsolved.slug)!, progress.hintsShown[firstUnsolved.nn] ?? 0));
    else if (lessons.length) out.push('', `All ${lessons.length} lesson(s) in this run pass.`);

    // Suites that are not lessons (the runtime's self-tests): their failures, plainly.
    for (const [name, r] of results) {
      if (lessons.some((l) => l.slug === name)) continue;
      for (const t of r.tests.filter((t) => t.state === 'failed')) out.push('', `✗ ${name}: ${t.fullName}`, indent(t.errorMessage ?? ''));
      for (const e of r.loadErrors) out.push('', `✗ ${name}: ${e}`);
    }

    if (lessons.length) {
      const solved = lessons.filter((l) => isSolved(results.get(l.slug)!)).length;
      out.push('', `${solved} of ${lessons.length} lesson(s) solved.${firstUnsolved ? ` Next: lesson ${firstUnsolved.nn}, ${firstUnsolved.title} (${relative(firstUnsolved.readme)}).` : ''}`);
    }
    const all = [...results.values()].flatMap((r) => r.tests);
    const passed = all.filter((t) => t.state === 'passed').length;
    const failed = all.filter((t) => t.state === 'failed').length + [...results.values()].filter((r) => r.loadErrors.length).length;
    out.push('', `${passed} passed, ${failed} failed`);
    const changed = changedFiles();
    if (changed.length) {
      out.push('', `⚠ Changed since the workbook shipped them: ${changed.join(', ')}.`, '  The results above no longer say whether your server is right. git checkout -- <file> restores one.');
    }
    console.log(out.join('\n'));
    this.options.onResults?.(results);
  }

  private describeFailure(lesson: LessonInfo, r: ProjectResult, hintsShown: number): string[] {
    const lines = [`Lesson ${lesson.nn}, ${lesson.title}: ${lesson.concern}`, `  read: ${relative(lesson.readme)}`, ''];
    if (r.loadErrors.length) {
      lines.push('The lesson\'s tests could not load your code:', ...r.loadErrors.map((e) => `  ${e}`));
    } else {
      // Every test, and for each failure its one-line summary; the first one in full below.
      for (const t of r.tests) {
        lines.push(t.state === 'passed' ? `  ✓ ${t.title}` : `  ✗ ${t.title}${t.errorMessage ? `\n      ${t.errorMessage.split('\n')[0]}` : ''}`);
      }
      const first = r.tests.find((t) => t.state === 'failed');
      if (first) lines.push('', `First failure: ${first.title}`, '', indent(first.errorMessage ?? '(no message)'));
    }
    const total = lesson.hints.length;
    lines.push('', hintsShown < total
      ? `Stuck? npm run hint ${lesson.nn}  (hint ${hintsShown + 1} of ${total})`
      : `All ${total} hints shown: npm run hint ${lesson.nn} prints them again.`);
    return lines;
  }
}

function indent(text: string): string {
  return text.split('\n').map((l) => `  ${l}`).join('\n');
}

function relative(file: string): string {
  return file.slice(file.indexOf('/lessons/') + 1);
}
