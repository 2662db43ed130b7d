// The hint tiers of a lesson: a nudge, the mechanism, nearly the answer. Each call shows
// one more (remembered in .workbook/), and the ones already shown.
import type { LessonInfo } from '../lessons.ts';
import { readProgress, writeProgress } from './state.ts';

/** The next hint of `lesson` and those before it, as text; counts it as shown. */
export function nextHint(lesson: LessonInfo): string {
  if (!lesson.hints.length) return `Lesson ${lesson.nn} has no hints. Read lessons/${lesson.slug}/README.md.`;
  const progress = readProgress();
  const shown = Math.min((progress.hintsShown[lesson.nn] ?? 0) + 1, lesson.hints.length);
  progress.hintsShown[lesson.nn] = shown;
  writeProgress(progress);
  return [
    `Lesson ${lesson.nn}, ${lesson.title}: hint ${shown} of ${lesson.hints.length}`,
    '',
    ...lesson.hints.slice(0, shown).map((hint, i) => `${i + 1}. ${hint}\n`),
    shown < lesson.hints.length
      ? `Once more for hint ${shown + 1}. The lesson text: lessons/${lesson.slug}/README.md`
      : `That was the last hint. The full fix is in solutions/${lesson.slug}/ when you want to compare.`,
  ].join('\n');
}
