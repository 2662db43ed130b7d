// Loaded into each patched *mistake* tree's test files during verify: once one test has
// caught the mistake with a LessonFailure, the rest of the file is skipped. A mistake
// needs catching once; running the remaining tests would only make verify slower.
// (npm run catalog runs everything, to show every test that catches a mistake.) When the
// tests that caught it before are known (caught-by.json), only those run.
import { beforeEach } from 'vitest';

const only = process.env.WORKBOOK_CATALOG_ONLY ? (JSON.parse(process.env.WORKBOOK_CATALOG_ONLY) as string[]) : undefined;

beforeEach((context) => {
  if (only && !only.includes(context.task.name)) return context.skip();
  const caught = context.task.file.tasks.some(function failedWithLesson(task): boolean {
    if (task.type === 'suite') return task.tasks.some(failedWithLesson);
    return task.result?.state === 'fail' && task.result.errors?.[0]?.name === 'LessonFailure';
  });
  if (caught) context.skip();
});
