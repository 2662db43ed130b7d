// npm start, driven as a person would drive it: in an 80-column terminal (tmux, a real
// pseudo-terminal), on a clone of the workbook, pressing keys and saving files. And without a
// terminal, where it behaves like npm test.
import { execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { eventually } from '../../runtime/harness/index.ts';
import { projectRoot } from '../../runtime/targets/resolve.ts';

let clone: string;
const session = `workbook-start-${process.pid}`;

beforeAll(() => {
  // A clone of the committed workbook, so that "reset" has a git HEAD to go back to.
  clone = mkdtempSync(path.join(os.tmpdir(), 'workbook-start-'));
  execFileSync('git', ['clone', '--quiet', projectRoot, clone]);
  symlinkSync(path.join(projectRoot, 'node_modules'), path.join(clone, 'node_modules'));
});
afterAll(() => {
  spawnSync('tmux', ['kill-session', '-t', session]);
  rmSync(clone, { recursive: true, force: true });
});

const screen = () => execFileSync('tmux', ['capture-pane', '-p', '-S', '-200', '-t', session], { encoding: 'utf8' });
const press = (key: string) => execFileSync('tmux', ['send-keys', '-t', session, key]);
const shows = (text: string, within: number) => eventually(() => expect(screen()).toContain(text), { within, every: 100 });
// For text already on the screen from before: waits until it is there once more.
// Counted over the pane's whole history (a cleared screen scrolls into it), so counts only grow.
const count = (text: string) => execFileSync('tmux', ['capture-pane', '-p', '-S', '-', '-t', session], { encoding: 'utf8' }).split(text).length - 1;
const showsAgain = (text: string, before: number, within: number) => eventually(() => expect(count(text)).toBeGreaterThan(before), { within, every: 100 });

describe('npm start', () => {
  test('in a terminal: h shows hint 1 then 2, l the lessons, r restores the exercise, a saved fix moves on, d diffs it with the reference, c checks all, n skips, q quits', async () => {
    const lesson = path.join(clone, 'lessons/01-close-leaks');
    execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '80', '-y', '50', '-c', clone, `node --import tsx runtime/cli/start.ts 01 02; echo "start exited with $?"; sleep 60`]);
    await shows('Keys: h hint', 60_000);

    press('h');
    await shows('hint 1 of', 5000);
    press('h');
    await shows('hint 2 of', 5000);
    press('l');
    await shows('▶ 01 Close leaks', 5000);

    const file = path.join(lesson, 'presence.ts');
    const exercise = readFileSync(file, 'utf8');
    appendFileSync(file, '\n// an edit that goes wrong\n');
    press('r');
    await shows('Reset lessons/01-close-leaks/ to the exercise?', 5000);
    press('y');
    await eventually(() => expect(readFileSync(file, 'utf8')).toBe(exercise), { within: 5000, every: 100 });
    await shows('is the exercise again', 30_000);

    // The fix, saved: the watcher runs the tests, they pass, and lesson 02 is next.
    for (const f of readdirSync(path.join(clone, 'solutions/01-close-leaks')).filter((f) => f.endsWith('.ts'))) {
      cpSync(path.join(clone, 'solutions/01-close-leaks', f), path.join(lesson, f));
    }
    await shows('Now: lesson 02', 60_000);
    // The solved lesson's diff to the reference, after a yes: here there is none.
    press('d');
    await shows('differs from the reference? (y/N)', 5000);
    press('y');
    await shows('is the reference, line for line', 5000);

    // c checks every lesson again: 01 is solved now, 02 is not. n on 02, the only lesson
    // left to solve, stays on it instead of claiming every lesson passes.
    const watching = count('Now: lesson 02');
    press('c');
    await shows('1 of 2 lesson(s) solved', 60_000);
    await showsAgain('Now: lesson 02', watching, 30_000);
    const keysShown = count('Keys: h hint');
    press('n');
    await shows('Lesson 02 is the only one left to solve.', 5000);
    await showsAgain('Keys: h hint', keysShown, 30_000);

    press('q');
    await shows('start exited with 0', 15_000);
    expect(screen()).not.toContain('Every lesson passes');
    // In an 80-column terminal its own lines fit: the keys and the lesson list do not wrap.
    const lines = execFileSync('tmux', ['capture-pane', '-p', '-J', '-S', '-', '-t', session], { encoding: 'utf8' }).split('\n');
    const own = lines.filter((l) => /^(Keys: | {6}d your files| [✔▶ ] \d\d )/.test(l));
    expect(own.length).toBeGreaterThan(3);
    expect(own.filter((l) => l.trimEnd().length > 80)).toEqual([]);
  }, 240_000);

  test('without a terminal it checks the lessons once and exits, non-zero while one fails, and says when a test file was changed', () => {
    // Lesson 02: the test above solved 01 in this clone. And a test file edited, which
    // it must say plainly: the results then mean nothing.
    appendFileSync(path.join(clone, 'test/02-framing.test.ts'), '\n// made easier\n');
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'runtime/cli/start.ts', '02'], { cwd: clone, encoding: 'utf8', timeout: 60_000, stdio: ['pipe', 'pipe', 'pipe'] });
    expect(run.stdout).toContain('Checking every lesson once');
    expect(run.stdout).toMatch(/0 of 1 lesson\(s\) solved/);
    expect(run.stdout).toContain('Changed since the workbook shipped them: test/02-framing.test.ts');
    expect(run.status).toBe(1);
  }, 90_000);
});
