// The learner's local progress, kept in .workbook/progress.json (ignored by git): the last
// result of each lesson and how many hint tiers each lesson has shown.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { projectRoot } from '../targets/resolve.ts';

export interface Progress {
  lessons: Record<string, { passed: number; total: number; at: string }>;
  hintsShown: Record<string, number>;
}

const file = path.join(projectRoot, '.workbook', 'progress.json');

export function readProgress(): Progress {
  try {
    const data = JSON.parse(readFileSync(file, 'utf8')) as Partial<Progress>;
    return { lessons: data.lessons ?? {}, hintsShown: data.hintsShown ?? {} };
  } catch {
    return { lessons: {}, hintsShown: {} };
  }
}

export function writeProgress(progress: Progress): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(progress, null, 2)}\n`);
}
