// The catalog machinery: patches apply to a copy of the solution, and the judging rules
// (a mistake needs a LessonFailure; an alternative must pass everything) hold.
import { describe, expect, test } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildTree, judgeEntry, listCatalog, patchComment, writeRecord, type CatalogEntry } from '../../runtime/cli/catalog.ts';
import type { ProjectResult, TestOutcome } from '../../runtime/cli/results.ts';
import { findLesson } from '../../runtime/lessons.ts';
import { solutionsDir } from '../../runtime/targets/resolve.ts';

const lesson = findLesson('01')!;
const solution = readFileSync(path.join(solutionsDir, lesson.slug, 'presence.ts'), 'utf8');
const line = solution.split('\n').find((l) => l.includes('clearInterval(ticker)'))!;

function entry(kind: CatalogEntry['kind'], patch: string): CatalogEntry & { cleanup(): void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'workbook-catalog-'));
  const file = path.join(dir, 'x.patch');
  writeFileSync(file, patch);
  return { lesson, kind, name: 'x', file, why: patchComment(patch), project: 'p', tree: path.join(dir, 'tree'), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

function result(states: Array<[string, 'passed' | 'failed', string?]>): ProjectResult {
  return { loadErrors: [], durationMs: 1, tests: states.map(([title, state, errorName]): TestOutcome => ({ title, fullName: title, state, ...(errorName ? { errorName, errorMessage: `${errorName}: boom` } : {}) })) };
}

const unrefPatch = `# The ticker is unref'd,
# not cleared.
--- a/presence.ts
+++ b/presence.ts
@@ -1,1 +1,1 @@
${solution.split('\n')[0]}
`;

describe('catalog', () => {
  test('the comment lines of a patch say what the mistake is', () => {
    expect(patchComment(unrefPatch)).toBe("The ticker is unref'd, not cleared.");
  });

  test('a patch is applied to a copy of the solution, the solution stays untouched', () => {
    const index = solution.split('\n').indexOf(line) + 1;
    const e = entry('mistakes', `# unref\n--- a/presence.ts\n+++ b/presence.ts\n@@ -${index},1 +${index},1 @@\n-${line}\n+${line.replace('clearInterval(ticker)', 'ticker.unref()')}\n`);
    try {
      buildTree(e);
      const patched = readFileSync(path.join(e.tree, lesson.slug, 'presence.ts'), 'utf8');
      expect(patched).toContain('ticker.unref()');
      expect(patched).not.toContain('clearInterval(ticker)');
      expect(readFileSync(path.join(solutionsDir, lesson.slug, 'presence.ts'), 'utf8')).toBe(solution);
      // The other lessons come along, so a patched lesson's imports resolve in its own tree.
      expect(existsSync(path.join(e.tree, '02-framing', 'codec.ts'))).toBe(true);
      expect(existsSync(path.join(e.tree, lesson.slug, 'mistakes'))).toBe(false);
    } finally {
      e.cleanup();
    }
  });

  test('a patch that no longer applies is an error that names it', () => {
    const e = entry('mistakes', '# stale\n--- a/presence.ts\n+++ b/presence.ts\n@@ -1,1 +1,1 @@\n-no such line\n+something\n');
    try {
      expect(() => buildTree(e)).toThrow(/mistakes\/x\.patch does not apply/);
    } finally {
      e.cleanup();
    }
  });

  test('a mistake is caught only by a LessonFailure', () => {
    const e = entry('mistakes', unrefPatch);
    e.cleanup();
    expect(judgeEntry(e, result([['a', 'passed'], ['b', 'failed', 'LessonFailure']])).ok).toBe(true);
    expect(judgeEntry(e, result([['a', 'passed'], ['b', 'passed']])).summary).toMatch(/^survives/);
    expect(judgeEntry(e, result([['a', 'failed', 'Error']])).ok).toBe(false);
    // A TypeError anywhere means the patch breaks the server rather than getting it wrong.
    expect(judgeEntry(e, result([['a', 'failed', 'LessonFailure'], ['b', 'failed', 'TypeError']])).summary).toMatch(/^breaks/);
    expect(judgeEntry(e, undefined).ok).toBe(false);
  });

  test('the record keeps the first two tests that caught each mistake, and the catalog reads it back', () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'workbook-record-'));
    try {
      mkdirSync(path.join(root, lesson.slug, 'mistakes'), { recursive: true });
      writeFileSync(path.join(root, lesson.slug, 'mistakes', 'x.patch'), unrefPatch);
      writeFileSync(path.join(root, lesson.slug, 'mistakes', 'y.patch'), unrefPatch);
      const [x, y] = listCatalog(lesson, ['mistakes'], root);
      expect(x!.catchers).toBeUndefined();
      const caughtByThree = judgeEntry(x!, result([['a', 'passed'], ['b', 'failed', 'LessonFailure'], ['c', 'failed', 'Error'], ['d', 'failed', 'LessonFailure'], ['e', 'failed', 'LessonFailure']]));
      const survives = judgeEntry(y!, result([['a', 'passed']]));
      writeRecord([caughtByThree, survives], root);
      const [x2, y2] = listCatalog(lesson, ['mistakes'], root);
      // In file order, LessonFailures only; a mistake that survived has no record.
      expect(x2!.catchers).toEqual(['b', 'd']);
      expect(y2!.catchers).toBeUndefined();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test('an alternative must pass every test', () => {
    const e = entry('alternatives', unrefPatch);
    e.cleanup();
    expect(judgeEntry(e, result([['a', 'passed'], ['b', 'passed']])).ok).toBe(true);
    expect(judgeEntry(e, result([['a', 'passed'], ['b', 'failed', 'LessonFailure']])).summary).toMatch(/rejected by 1 test/);
  });
});
