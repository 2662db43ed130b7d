// npm test [-- 02 ...]: checks your lessons (all, or the ones named). Each lesson is judged
// on its own: the other lessons' modules come from solutions/, so a lesson's failures are
// its own. The capstone alone runs entirely on your code.
import { isSolved } from './results.ts';
import { pickLessons, runOnce } from './run.ts';
import ProgressReporter from '../reporter/progress.ts';

const lessons = pickLessons(process.argv.slice(2));
const results = await runOnce({ projects: lessons.map((l) => l.slug), target: process.env.WORKBOOK_TARGET ?? 'lessons', reporters: [new ProgressReporter()] });

const solved = lessons.filter((l) => results.get(l.slug) && isSolved(results.get(l.slug)!));
const next = lessons.find((l) => !solved.includes(l));
console.log(`\n${solved.length} of ${lessons.length} lesson(s) solved.${next ? ` Next: lesson ${next.nn}, ${next.title} (lessons/${next.slug}/README.md).` : ''}`);
process.exitCode = solved.length === lessons.length ? 0 : 1;
