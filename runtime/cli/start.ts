// npm start [-- NN ...]: where you are, and what to do next. It checks every lesson once,
// then watches the first unsolved lesson and runs its tests again each time you save. When
// that lesson passes it moves on to the next. Keys while it watches:
//
//   h  the next hint            l  the lessons and your progress     n  skip to the next lesson
//   r  reset this lesson's files to the exercise (asks first; a backup goes to .workbook/)
//   d  the diff from your files to the reference (once the lesson passes; asks first)
//   c  check every lesson       q  quit
//
// Without a terminal (CI, a pipe) there is nobody to press keys: it checks every lesson
// once, like npm test, and exits.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { diffToReference, listLessons, type LessonInfo } from '../lessons.ts';
import ProgressReporter from '../reporter/progress.ts';
import { projectRoot } from '../targets/resolve.ts';
import { nextHint } from './hints.ts';
import { isSolved, type ProjectResult } from './results.ts';
import { open, pickLessons, runOnce } from './run.ts';
import { readProgress } from './state.ts';

const lessons = pickLessons(process.argv.slice(2));
if (!lessons.length) throw new Error('No lessons found in lessons/.');
const projects = lessons.map((l) => l.slug);
const solved = (results: Map<string, ProjectResult>, lesson: LessonInfo) => {
  const r = results.get(lesson.slug);
  return r !== undefined && isSolved(r);
};

console.log('Checking every lesson once (each judged on its own)…');
let results = await runOnce({ projects, target: 'lessons', reporters: [new ProgressReporter()] });

if (!process.stdin.isTTY || !process.stdout.isTTY) {
  process.exitCode = lessons.every((l) => solved(results, l)) ? 0 : 1;
} else {
  await interactive();
}

async function interactive(): Promise<void> {
  readline.emitKeypressEvents(process.stdin);
  process.stdin.setRawMode(true);
  // One key handler for the whole session; what a key does depends on the moment.
  let onKey: (key: string) => void = () => {};
  let answer: ((yes: boolean) => void) | undefined;
  process.stdin.on('keypress', (_text: string, key: { name?: string; ctrl?: boolean }) => {
    const name = key.ctrl && key.name === 'c' ? 'q' : (key.name ?? '');
    if (answer) {
      const reply = answer;
      answer = undefined;
      return reply(name === 'y');
    }
    onKey(name);
  });
  const ask = (question: string) =>
    new Promise<boolean>((resolve) => {
      process.stdout.write(`${question} (y/N) `);
      answer = (yes) => {
        process.stdout.write(yes ? 'yes\n' : 'no\n');
        resolve(yes);
      };
    });

  let lastSolved: LessonInfo | undefined;
  // Said after the next results: a reset rewrites files, the tests run again, and the
  // screen is cleared for their results.
  let notice = '';
  let current = lessons.findIndex((l) => !solved(results, l));
  try {
    while (current >= 0 && current < lessons.length) {
      const lesson = lessons[current]!;
      const outcome = await watch(lesson);
      if (outcome === 'quit') return;
      if (outcome === 'check') {
        results = await runOnce({ projects, target: 'lessons', reporters: [new ProgressReporter()] });
        current = lessons.findIndex((l) => !solved(results, l));
        continue;
      }
      if (outcome === 'solved') {
        lastSolved = lesson;
        console.log(`\nLesson ${lesson.nn} solved. Press d to compare your files with the reference.`);
      }
      // The next unsolved lesson after this one; past the end, round to the first. Skipping
      // the only unsolved lesson left stays on it.
      const unsolvedAfter = (from: number) => lessons.findIndex((l, i) => i > from && !solved(results, l));
      const next = unsolvedAfter(current) >= 0 ? unsolvedAfter(current) : unsolvedAfter(-1);
      if (outcome === 'next' && next === current) console.log(`\nLesson ${lesson.nn} is the only one left to solve.`);
      current = next;
    }
    console.log('\nEvery lesson passes. The capstone server is yours: npm run server -- --mine (see its README).');
  } finally {
    process.stdin.setRawMode(false);
    process.stdin.pause();
    // Leaving is not a failure (vitest sets a failing exit code for the lesson's failing
    // tests, and npm would print an error over it).
    process.exitCode = 0;
  }

  /** Watches one lesson until it passes, or a key says otherwise. */
  async function watch(lesson: LessonInfo): Promise<'solved' | 'next' | 'check' | 'quit'> {
    let finish!: (outcome: 'solved' | 'next' | 'check' | 'quit') => void;
    const done = new Promise<'solved' | 'next' | 'check' | 'quit'>((resolve) => (finish = resolve));
    console.log(`\nNow: lesson ${lesson.nn}, ${lesson.title}. Read lessons/${lesson.slug}/README.md, edit the files next to it`);
    console.log('and save: the tests run again on every save.\n');
    const reporter = new ProgressReporter({
      onResults: (latest) => {
        results = new Map([...results, ...latest]);
        if (solved(latest, lesson)) return finish('solved');
        if (notice) console.log(notice);
        notice = '';
        console.log(keys(lesson));
      },
    });
    // Each rerun starts on a clean screen: only the latest results are on it.
    const clear = { onWatcherRerun: () => void process.stdout.write('\x1b[2J\x1b[H') };
    // Keys work from now on, while vitest starts too.
    onKey = (name) => {
      if (name === 'q') return finish('quit');
      if (name === 'n') return finish('next');
      if (name === 'c') return finish('check');
      if (name === 'h') return console.log(`\n${nextHint(lesson)}\n`);
      if (name === 'l') return console.log(list(lesson));
      if (name === 'r') {
        void ask(`Reset lessons/${lesson.slug}/ to the exercise? Your files are kept in .workbook/backup/.`).then((yes) => {
          if (!yes) return;
          notice = reset(lesson);
          console.log(notice);
        });
        return;
      }
      if (name === 'd') {
        const target = lastSolved ?? (solved(results, lesson) ? lesson : undefined);
        if (!target) return console.log('\nThe diff to the reference opens once a lesson passes: it would give the answer away.');
        void ask(`Show how your lessons/${target.slug}/ differs from the reference?`).then((yes) => yes && console.log(showDiff(target)));
      }
    };
    const vitest = await open({ projects: [lesson.slug], target: 'lessons', reporters: [clear, reporter], watch: true });
    await vitest.start();
    const outcome = await done;
    onKey = () => {};
    await vitest.close();
    return outcome;
  }
}

/** The keys, under every result, in two lines that fit 80 columns. */
function keys(lesson: LessonInfo): string {
  return `\nKeys: h hint · l lessons · n next lesson · r reset ${lesson.nn} · c check all · q quit\n      d your files against the reference (once the lesson passes)`;
}

function list(current: LessonInfo): string {
  const progress = readProgress().lessons;
  const rows = listLessons().map((l) => {
    const p = progress[l.slug];
    const mark = p && p.passed === p.total ? '✔' : l.slug === current.slug ? '▶' : ' ';
    return ` ${mark} ${l.nn} ${l.title.padEnd(32)} ${p ? `${p.passed}/${p.total}` : '–'}`;
  });
  return `\n${rows.join('\n')}\n`;
}

/** The lesson's files as the workbook shipped them (git's HEAD), after a backup of yours. */
function reset(lesson: LessonInfo): string {
  const dir = path.join('lessons', lesson.slug);
  let files: string[];
  try {
    files = execFileSync('git', ['ls-files', dir], { cwd: projectRoot, encoding: 'utf8' }).split('\n').filter(Boolean);
  } catch {
    return `\nNo git history here to reset from: get lessons/${lesson.slug}/ again from the repository.`;
  }
  const backup = path.join(projectRoot, '.workbook', 'backup', `${lesson.slug}-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(backup, { recursive: true });
  for (const file of files) {
    const full = path.join(projectRoot, file);
    if (existsSync(full)) writeFileSync(path.join(backup, path.basename(file)), readFileSync(full));
    writeFileSync(full, execFileSync('git', ['show', `HEAD:${file}`], { cwd: projectRoot }));
  }
  return `\nlessons/${lesson.slug}/ is the exercise again (${files.length} files); yours are in ${path.relative(projectRoot, backup)}/.`;
}

function showDiff(lesson: LessonInfo): string {
  const text = diffToReference(lesson, ['yours', 'reference']);
  return text ? `\n${text}` : `\nYour lessons/${lesson.slug}/ is the reference, line for line.`;
}
