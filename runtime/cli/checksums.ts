// A lesson's results mean something only while its tests and its manifest are the
// workbook's own. runtime/checksums.json keeps their SHA-256; the reporter says plainly
// when one differs. `npm run checksums` rewrites the file (maintainers, after changing a
// test or a manifest); a runtime test fails while it is stale.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { projectRoot } from '../targets/resolve.ts';

const FILE = path.join(projectRoot, 'runtime', 'checksums.json');

/** The files a learner could edit to make a lesson pass without fixing it. */
export function guardedFiles(): string[] {
  const tests = readdirSync(path.join(projectRoot, 'test'), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.test.ts') && /^\d\d-/.test(f))
    .map((f) => path.posix.join('test', f.split(path.sep).join('/')));
  const manifests = readdirSync(path.join(projectRoot, 'solutions'))
    .filter((d) => existsSync(path.join(projectRoot, 'solutions', d, 'manifest.json')))
    .map((d) => `solutions/${d}/manifest.json`);
  return [...tests, ...manifests].sort();
}

// Line endings as git on Windows may check them out do not count as a change.
const sha256 = (file: string) => createHash('sha256').update(readFileSync(path.join(projectRoot, file), 'utf8').replace(/\r\n/g, '\n')).digest('hex');

export function computeChecksums(): Record<string, string> {
  return Object.fromEntries(guardedFiles().map((f) => [f, sha256(f)]));
}

/** Guarded files that differ from (or are missing against) the recorded checksums. */
export function changedFiles(): string[] {
  if (!existsSync(FILE)) return [];
  const recorded = JSON.parse(readFileSync(FILE, 'utf8')) as Record<string, string>;
  return Object.entries(recorded)
    .filter(([file, sum]) => !existsSync(path.join(projectRoot, file)) || sha256(file) !== sum)
    .map(([file]) => file);
}

export function writeChecksums(): number {
  const sums = computeChecksums();
  writeFileSync(FILE, JSON.stringify(sums, null, 2) + '\n');
  return Object.keys(sums).length;
}
