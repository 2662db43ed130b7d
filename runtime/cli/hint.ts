// npm run hint [-- NN]: the next hint for a lesson (default: the first lesson not yet
// solved in your last test run).
import { listLessons } from '../lessons.ts';
import { nextHint } from './hints.ts';
import { pickLessons } from './run.ts';
import { readProgress } from './state.ts';

const progress = readProgress();
const named = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const lesson = named.length
  ? pickLessons(named)[0]!
  : listLessons().find((l) => {
      const last = progress.lessons[l.slug];
      return !last || last.passed < last.total;
    }) ?? listLessons()[0];

console.log(lesson ? `\n${nextHint(lesson)}` : 'No lessons found.');
