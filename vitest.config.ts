// One vitest project per lesson (named after its directory) plus one for the runtime's
// own tests. Each lesson project resolves `#target/...` through the workbook's target
// plugin: lesson NN from WORKBOOK_TARGET, every other lesson from solutions/, so a
// lesson's failures are its own. The capstone alone runs on the target tree throughout.
// While verify checks the mistakes catalogs it adds one project per patched tree.
import { defineConfig } from 'vitest/config';
import { listLessons } from './runtime/lessons.ts';
import { readPlan } from './runtime/cli/catalog.ts';
import { lessonNumber, targetDir } from './runtime/targets/resolve.ts';
import { workbookTargets } from './runtime/targets/vite-plugin.ts';
import ProgressReporter from './runtime/reporter/progress.ts';

const target = targetDir(process.env.WORKBOOK_TARGET);
// WORKBOOK_ISOLATE: unset = each lesson judged alone; NN = lesson NN alone; "none" = the
// target tree throughout.
const isolateAll = process.env.WORKBOOK_ISOLATE;

// Inline projects do not inherit the root's test options, so every project gets these.
const shared = { testTimeout: 10_000, hookTimeout: 10_000 };
const lessonFiles = (slug: string) => [`test/${slug}.test.ts`, `test/${slug}/**/*.test.ts`];

export default defineConfig({
  test: {
    pool: 'forks',
    // On 2 cores vitest would default to one worker.
    maxWorkers: 2,
    ...shared,
    // The learner's view: progress per lesson and the first failure in full. (npm start
    // and npm run verify pass reporters of their own.)
    reporters: [new ProgressReporter()],
    projects: [
      ...listLessons().map((lesson) => {
        // The capstone runs on the target tree throughout (the learner's own modules),
        // except when verify judges the exercise: then, like every lesson, alone.
        const capstoneWhole = lesson.capstone && !process.env.WORKBOOK_CAPSTONE_ALONE;
        const isolate = isolateAll === 'none' ? undefined : isolateAll ? lessonNumber(isolateAll) : capstoneWhole ? undefined : lesson.nn;
        return {
          plugins: [workbookTargets({ target, isolate })],
          test: { ...shared, name: lesson.slug, include: lessonFiles(lesson.slug) },
        };
      }),
      { plugins: [workbookTargets({ target })], test: { ...shared, name: 'runtime', include: ['test/runtime/**/*.test.ts'] } },
      // A patched copy of one lesson's solution, judged alone (see runtime/cli/catalog.ts).
      ...readPlan(process.env.WORKBOOK_CATALOG).map((p) => ({
        plugins: [workbookTargets({ target: p.tree, isolate: p.nn })],
        test: {
          ...shared, name: p.project, include: lessonFiles(p.slug),
          setupFiles: p.stopAtFirstCatch ? ['runtime/cli/catalog-setup.ts'] : [],
          env: p.only ? { WORKBOOK_CATALOG_ONLY: JSON.stringify(p.only) } : {},
        },
      })),
    ],
  },
});
