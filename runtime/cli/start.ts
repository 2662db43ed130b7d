// npm start: where you are, and what to do next. It checks every lesson once, prints the
// progress table, then watches the first unsolved lesson and re-runs its tests each time
// you save. When that lesson passes it moves on to the next. Ctrl-C to stop.
import { listLessons } from '../lessons.ts';
import ProgressReporter from '../reporter/progress.ts';
import { isSolved, type ProjectResult } from './results.ts';
import { open, runOnce } from './run.ts';

const lessons = listLessons();
if (!lessons.length) throw new Error('No lessons found in lessons/.');

console.log('Checking every lesson once (each judged on its own)…');
let results = await runOnce({ projects: lessons.map((l) => l.slug), target: 'lessons', reporters: [new ProgressReporter()] });

for (;;) {
  const next = lessons.find((l) => !results.get(l.slug) || !isSolved(results.get(l.slug)!));
  if (!next) {
    console.log('\nEvery lesson passes. The capstone server is yours: npm run server (see its README).');
    break;
  }
  console.log(`\nNow: lesson ${next.nn}, ${next.title}. Read lessons/${next.slug}/README.md, edit the files next to it,`);
  console.log('and save: the tests run again on every save. npm run hint gives a hint. Ctrl-C to stop.\n');

  // Watch the lesson until a run passes, then close the watcher and go on.
  let markSolved!: (results: Map<string, ProjectResult>) => void;
  const solved = new Promise<Map<string, ProjectResult>>((resolve) => (markSolved = resolve));
  const reporter = new ProgressReporter({
    onResults: (r) => {
      const mine = r.get(next.slug);
      if (mine && isSolved(mine)) markSolved(r);
    },
  });
  const vitest = await open({ projects: [next.slug], target: 'lessons', reporters: [reporter], watch: true });
  await vitest.start();
  const latest = await solved;
  await vitest.close();
  results = new Map([...results, ...latest]);
  console.log(`\nLesson ${next.nn} solved. Compare with the reference: diff -u lessons/${next.slug} solutions/${next.slug}`);
}
