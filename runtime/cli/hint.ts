// npm run hint [-- NN]: the next hint for a lesson (default: the first lesson not yet
// solved in your last test run). Hints come in tiers: a nudge, the mechanism, nearly the
// answer. Each call shows one more, and the ones already shown.
import { listLessons } from '../lessons.ts';
import { readProgress, writeProgress } from './state.ts';
import { pickLessons } from './run.ts';

const progress = readProgress();
const named = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const lesson = named.length
  ? pickLessons(named)[0]!
  : listLessons().find((l) => {
      const last = progress.lessons[l.slug];
      return !last || last.passed < last.total;
    }) ?? listLessons()[0];

if (!lesson) {
  console.log('No lessons found.');
} else if (!lesson.hints.length) {
  console.log(`Lesson ${lesson.nn} has no hints. Read lessons/${lesson.slug}/README.md.`);
} else {
  const shown = Math.min((progress.hintsShown[lesson.nn] ?? 0) + 1, lesson.hints.length);
  progress.hintsShown[lesson.nn] = shown;
  writeProgress(progress);
  console.log(`\nLesson ${lesson.nn}, ${lesson.title}: hint ${shown} of ${lesson.hints.length}\n`);
  lesson.hints.slice(0, shown).forEach((hint, i) => console.log(`${i + 1}. ${hint}\n`));
  console.log(shown < lesson.hints.length
    ? `Run it again for hint ${shown + 1}. The lesson text: lessons/${lesson.slug}/README.md`
    : `That was the last hint. The full fix is in solutions/${lesson.slug}/ when you want to compare.`);
}
