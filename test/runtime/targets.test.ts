// Target resolution: which tree each lesson's code comes from, under vitest and under tsx.
import { describe, expect, test } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { lessonNumber, lessonsDir, projectRoot, redirect, resolveTargetSpecifier, solutionsDir, targetDir, treeFor } from '../../runtime/targets/resolve.ts';

describe('resolve', () => {
  test('lesson numbers are read from any spelling', () => {
    expect([lessonNumber('2'), lessonNumber('02'), lessonNumber('02-framing'), lessonNumber('framing')]).toEqual(['02', '02', '02', undefined]);
  });

  test('the target names map to trees', () => {
    expect(targetDir(undefined)).toBe(lessonsDir);
    expect(targetDir('lessons')).toBe(lessonsDir);
    expect(targetDir('solutions')).toBe(solutionsDir);
    expect(targetDir('/tmp/other')).toBe('/tmp/other');
  });

  test('isolation sends every other lesson to solutions/', () => {
    const choice = { target: lessonsDir, isolate: '03' };
    expect(treeFor('03', choice)).toBe(lessonsDir);
    expect(treeFor('02', choice)).toBe(solutionsDir);
    expect(treeFor('02', { target: lessonsDir })).toBe(lessonsDir);
  });

  test('a relative import into an earlier lesson is redirected', () => {
    const choice = { target: lessonsDir, isolate: '03' };
    expect(redirect(path.join(lessonsDir, '02-framing/codec.ts'), choice)).toBe(path.join(solutionsDir, '02-framing/codec.ts'));
    expect(redirect(path.join(lessonsDir, '03-deadlines/server.ts'), choice)).toBe(path.join(lessonsDir, '03-deadlines/server.ts'));
    expect(redirect(path.join(projectRoot, 'runtime/protocol.ts'), choice)).toBe(path.join(projectRoot, 'runtime/protocol.ts'));
  });

  test('an outside tree is a target like any other', () => {
    const choice = { target: '/tmp/elsewhere', isolate: '02' };
    expect(resolveTargetSpecifier('#target/02-framing/codec.ts', choice)).toBe('/tmp/elsewhere/02-framing/codec.ts');
    expect(redirect('/tmp/elsewhere/01-close-leaks/presence.ts', choice)).toBe(path.join(solutionsDir, '01-close-leaks/presence.ts'));
    expect(resolveTargetSpecifier('#protocol', choice)).toBe(path.join(projectRoot, 'runtime/protocol.ts'));
  });
});

describe('under tsx', () => {
  // A throwaway tree with two lessons, to see the Node hook pick files the way vitest does.
  function fakeTree({ packageJson = true } = {}) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'workbook-target-'));
    if (packageJson) writeFileSync(path.join(dir, 'package.json'), '{ "type": "module" }\n');
    mkdirSync(path.join(dir, '01-close-leaks'));
    mkdirSync(path.join(dir, '02-framing'));
    writeFileSync(path.join(dir, '01-close-leaks/who.ts'), "export const who = 'other-01';\n");
    // Top-level await: only an ES module can have it.
    writeFileSync(path.join(dir, '02-framing/who.ts'), "import { who as first } from '../01-close-leaks/who.ts';\nawait Promise.resolve();\nexport const who = `other-02+${first}`;\n");
    return dir;
  }

  function run(env: Record<string, string>): Promise<string> {
    const script = "const m = await import('#target/02-framing/who.ts'); console.log(m.who);";
    return new Promise((resolve, reject) => {
      execFile(process.execPath, ['--import', 'tsx', '--import', './runtime/targets/register.ts', '--input-type=module', '-e', script], { cwd: projectRoot, env: { ...process.env, ...env } }, (err, stdout, stderr) => (err ? reject(new Error(stderr)) : resolve(stdout.trim())));
    });
  }

  test('WORKBOOK_TARGET and WORKBOOK_ISOLATE pick the files', async () => {
    const dir = fakeTree();
    try {
      // The whole tree: lesson 02 and the lesson 01 it imports both come from `dir`.
      expect(await run({ WORKBOOK_TARGET: dir })).toBe('other-02+other-01');
      // Lesson 02 judged alone: its import of lesson 01 goes to solutions/, which has no
      // who.ts, so the error names the redirected file.
      await expect(run({ WORKBOOK_TARGET: dir, WORKBOOK_ISOLATE: '02' })).rejects.toThrow(path.join(solutionsDir, '01-close-leaks/who.ts'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 15_000);

  test('a tree outside the project with no package.json still loads as ES modules', async () => {
    // A copy of solutions/ in /tmp has no package.json saying "type": "module"; tsx would
    // compile it as CommonJS, where top-level await is an error.
    const dir = fakeTree({ packageJson: false });
    try {
      expect(await run({ WORKBOOK_TARGET: dir })).toBe('other-02+other-01');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 15_000);

  test("a tree outside the project takes its packages from the workbook's", async () => {
    // A copy of solutions/ in /tmp has no node_modules: the capstone's main.ts, run as a
    // child process, imports pino all the same (and #protocol, as every tree does).
    const dir = fakeTree({ packageJson: false });
    try {
      writeFileSync(path.join(dir, '02-framing/who.ts'), "import { diffLines } from 'diff';\nimport { FrameType } from '#protocol';\nexport const who = `${typeof diffLines}+${FrameType.DATA}`;\n");
      expect(await run({ WORKBOOK_TARGET: dir })).toBe('function+4');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 15_000);
});
