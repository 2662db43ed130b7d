// Failures that teach. Every lesson assertion fails with a LessonFailure, whose message
// says what was observed, what was expected, which idea is at stake, and where the next
// hint is. `npm run verify` insists that an exercise's bug tests fail this way, and not
// with a TypeError, a timeout or a missing export.

let currentLesson: string | undefined;

/** Set by useHarness(): the lesson whose hints a failure points to. */
export function setLesson(nn: string | undefined): void {
  currentLesson = nn;
}

export interface Lesson {
  /** What the test saw, in plain words and numbers. */
  observed: string;
  /** What a correct server does. */
  expected: string;
  /** The concept at stake, in one sentence. */
  idea: string;
}

export class LessonFailure extends Error {
  constructor(summary: string, lesson: Lesson) {
    const hint = currentLesson ? `npm run hint ${currentLesson}   (hints come in tiers, from a nudge to nearly the answer)` : undefined;
    const lines = [
      summary,
      `  observed: ${indent(lesson.observed)}`,
      `  expected: ${indent(lesson.expected)}`,
      `  idea:     ${indent(lesson.idea)}`,
      ...(hint ? [`  stuck?    ${hint}`] : []),
    ];
    super(lines.join('\n'));
    this.name = 'LessonFailure';
  }
}

function indent(text: string): string {
  return text.replace(/\n/g, '\n            ');
}

/** Fails the test with a teaching message unless `ok`. */
export function check(ok: boolean, summary: string, lesson: Lesson | (() => Lesson)): asserts ok {
  if (!ok) throw new LessonFailure(summary, typeof lesson === 'function' ? lesson() : lesson);
}

export function fail(summary: string, lesson: Lesson): never {
  throw new LessonFailure(summary, lesson);
}
