// runtime/checksums.json is what lets npm start and npm test say "you changed a test". It
// must describe the workbook as it is: after changing a test or a manifest, run
// `npm run checksums`.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { changedFiles, guardedFiles } from '../../runtime/cli/checksums.ts';
import { projectRoot } from '../../runtime/targets/resolve.ts';

describe('checksums', () => {
  test('runtime/checksums.json covers every lesson test and manifest, and matches them (npm run checksums rewrites it)', () => {
    const recorded = Object.keys(JSON.parse(readFileSync(path.join(projectRoot, 'runtime/checksums.json'), 'utf8')) as object);
    expect(recorded).toEqual(guardedFiles());
    expect(changedFiles()).toEqual([]);
  });
});
