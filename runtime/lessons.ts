// The lesson catalog: what lessons exist, what their README front matter says, and what
// their manifest (maintainer data, in solutions/) expects of their tests.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createTwoFilesPatch } from 'diff';
import { parse as parseYaml } from 'yaml';
import { lessonNumber, lessonsDir, projectRoot, solutionsDir } from './targets/resolve.ts';

export interface LessonInfo {
  nn: string;
  /** "02-framing": directory name, test file stem and vitest project name. */
  slug: string;
  title: string;
  concern: string;
  learn: string[];
  hints: string[];
  /** The capstone is judged on the learner's own tree, never in isolation. */
  capstone: boolean;
  readme: string;
  testFile: string;
  /** Set when the lesson's README is missing or its front matter is broken. */
  problem?: string;
}

export interface Manifest {
  lesson: string;
  bugs: Array<{
    id: string;
    /** The mistake, as the exercise makes it. */
    mistake: string;
    /** Test titles (unique within the lesson) that fail because of it. */
    tests: string[];
  }>;
}

export function splitFrontMatter(source: string): { data: Record<string, unknown>; body: string } {
  const m = source.match(/^---\n([\s\S]*?)\n---\n?/);
  if (!m) return { data: {}, body: source };
  return { data: (parseYaml(m[1]!) ?? {}) as Record<string, unknown>, body: source.slice(m[0].length) };
}

export function listLessons(): LessonInfo[] {
  if (!existsSync(lessonsDir)) return [];
  return readdirSync(lessonsDir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && /^\d\d-/.test(d.name))
    .map((d) => d.name)
    .sort()
    .map(readLesson);
}

function readLesson(slug: string): LessonInfo {
  const readme = path.join(lessonsDir, slug, 'README.md');
  let data: Record<string, unknown> = {};
  let problem: string | undefined;
  try {
    if (existsSync(readme)) data = splitFrontMatter(readFileSync(readme, 'utf8')).data;
    else problem = 'no README.md';
  } catch (err) {
    // One lesson's broken front matter must not stop every other lesson from running.
    problem = `README.md front matter does not parse: ${(err as Error).message.split('\n')[0]}`;
  }
  const strings = (v: unknown) => (Array.isArray(v) ? v.map(String) : []);
  return {
    nn: lessonNumber(slug)!,
    slug,
    title: String(data.title ?? slug),
    concern: String(data.concern ?? ''),
    learn: strings(data.learn),
    hints: strings(data.hints),
    capstone: data.capstone === true,
    readme,
    testFile: path.join(projectRoot, 'test', `${slug}.test.ts`),
    ...(problem ? { problem } : {}),
  };
}

/** Finds a lesson by "2", "02" or "02-framing". */
export function findLesson(name: string): LessonInfo | undefined {
  const nn = lessonNumber(name);
  return listLessons().find((l) => l.nn === nn || l.slug === name);
}

export function manifestPath(slug: string): string {
  return path.join(solutionsDir, slug, 'manifest.json');
}

export function readManifest(slug: string): Manifest | undefined {
  const file = manifestPath(slug);
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Manifest) : undefined;
}

/** The lesson's code files, as the learner edits them (lessons/NN-slug/*.ts). */
export function lessonFiles(lesson: LessonInfo): string[] {
  return readdirSync(path.join(lessonsDir, lesson.slug)).filter((f) => f.endsWith('.ts')).sort();
}

/**
 * A unified diff from the lesson's files (the exercise, or the learner's work on it) to the
 * reference in solutions/; '' when they are the same. npm start shows it once a lesson
 * passes, and the site behind a click.
 */
export function diffToReference(lesson: LessonInfo, labels: [string, string] = ['', '']): string {
  return lessonFiles(lesson)
    .map((f) => {
      const mine = readFileSync(path.join(lessonsDir, lesson.slug, f), 'utf8');
      const referenceFile = path.join(solutionsDir, lesson.slug, f);
      const reference = existsSync(referenceFile) ? readFileSync(referenceFile, 'utf8') : '';
      return mine === reference ? '' : createTwoFilesPatch(`lessons/${lesson.slug}/${f}`, `solutions/${lesson.slug}/${f}`, mine, reference, ...labels);
    })
    .filter(Boolean)
    .join('\n');
}
