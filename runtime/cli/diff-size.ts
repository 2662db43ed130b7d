// How big the fix is: lines added and removed between a lesson's exercise and its
// solution, over the files both trees share. A lesson's diff should be small and about
// its concern; verify prints the number so a growing one gets noticed.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { diffLines } from 'diff';
import { lessonsDir, solutionsDir } from '../targets/resolve.ts';

export function fixSize(slug: string): { changed: number; files: number } {
  let changed = 0;
  let files = 0;
  const dir = path.join(lessonsDir, slug);
  for (const name of readdirSync(dir).filter((n) => n.endsWith('.ts'))) {
    const solution = path.join(solutionsDir, slug, name);
    if (!existsSync(solution)) continue;
    let touched = false;
    for (const part of diffLines(readFileSync(path.join(dir, name), 'utf8'), readFileSync(solution, 'utf8'))) {
      if (part.added || part.removed) {
        changed += part.count ?? 0;
        touched = true;
      }
    }
    if (touched) files++;
  }
  return { changed, files };
}
