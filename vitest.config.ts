// One vitest project per lesson (named after its directory) plus one for the runtime's
// own tests. Each lesson project resolves `#target/...` through the workbook's target
// plugin: lesson NN from WORKBOOK_TARGET, every other lesson from solutions/, so a
// lesson's failures are its own. The capstone alone runs on the target tree throughout.
import { defineConfig } from 'vitest/config';
import { listLessons } from './runtime/lessons.ts';
import { lessonNumber, targetDir } from './runtime/targets/resolve.ts';
import { workbookTargets } from './runtime/targets/vite-plugin.ts';
import ProgressReporter from './runtime/reporter/progress.ts';

const target = targetDir(process.env.WORKBOOK_TARGET);
// WORKBOOK_ISOLATE: unset = each lesson judged alone; NN = lesson NN alone; "none" = the
// target tree throughout.
const isolateAll = process.env.WORKBOOK_ISOLATE;

export default defineConfig({
  test: {
    pool: 'forks',
    // On 2 cores vitest would default to one worker.
    maxWorkers: 2,
    testTimeout: 10_000,
    // The learner's view: progress per lesson and the first failure in full. (npm start
    // and npm run verify pass reporters of their own.)
    reporters: [new ProgressReporter()],
    hookTimeout: 10_000,
    projects: [
      ...listLessons().map((lesson) => {
        const isolate = isolateAll === 'none' ? undefined : isolateAll ? lessonNumber(isolateAll) : lesson.capstone ? undefined : lesson.nn;
        return {
          plugins: [workbookTargets({ target, isolate })],
          test: { name: lesson.slug, include: [`test/${lesson.slug}.test.ts`, `test/${lesson.slug}/**/*.test.ts`] },
        };
      }),
      { plugins: [workbookTargets({ target })], test: { name: 'runtime', include: ['test/runtime/**/*.test.ts'] } },
    ],
  },
});
