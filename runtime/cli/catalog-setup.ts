// Loaded into each patched *mistake* tree's test files during verify: once one test has
// caught the mistake with a LessonFailure, the rest of the file is skipped. A mistake
// needs catching once; running the remaining tests would only make verify slower.
// (npm run catalog runs everything, to show every test that catches a mistake.)
import { beforeEach } from 'vitest';

beforeEach((context) => {
  const caught = context.task.file.tasks.some(function failedWithLesson(task): boolean {
    if (task.type === 'suite') return task.tasks.some(failedWithLesson);
    return task.result?.state === 'fail' && task.result.errors?.[0]?.name === 'LessonFailure';
  });
  if (caught) context.skip();
});
