// Running vitest from our own commands: one place that knows how to pick lessons, point
// the suites at a tree, and collect the results.
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createVitest, type Reporter } from 'vitest/node';
import { projectRoot } from '../targets/resolve.ts';
import { findLesson, listLessons, type LessonInfo } from '../lessons.ts';
import { buildTree, catalogRoot, judgeEntry, planFile, writePlan, type CatalogEntry, type Judgement } from './catalog.ts';
import { groupByProject, type ProjectResult } from './results.ts';

export interface RunOptions {
  /** vitest project names to run (lesson slugs, "runtime"). */
  projects: string[];
  /** WORKBOOK_TARGET for this run: "lessons", "solutions" or a directory. */
  target?: string;
  reporters: Reporter[];
  watch?: boolean;
  /** Test files run at once (vitest.config.ts says 2). */
  maxWorkers?: number;
}

/** Runs the projects once and returns the results by project. */
export async function runOnce(options: RunOptions): Promise<Map<string, ProjectResult>> {
  const vitest = await open(options);
  try {
    const { testModules } = await vitest.start();
    return groupByProject(testModules);
  } finally {
    await vitest.close();
  }
}

/** Starts vitest (in watch mode if asked); the caller closes it. */
export async function open(options: RunOptions) {
  // vitest.config.ts reads the target when it is loaded, once per createVitest.
  if (options.target) process.env.WORKBOOK_TARGET = options.target;
  return createVitest('test', {
    watch: options.watch ?? false,
    ...(options.maxWorkers ? { maxWorkers: options.maxWorkers } : {}),
    project: options.projects,
    reporters: options.reporters,
    // Tests print nothing a learner needs; the reporter says what matters.
    silent: true,
  });
}

/**
 * Test files run at once for the catalog. Each patched tree is its own vitest project, so
 * each file gets a fresh worker, and its tests spend most of their time waiting on timers
 * and sockets: with 3 workers two cores were 45 % busy. 4 workers took the catalog from
 * 261 s to 206 s on a quiet 2-core machine; 6 took lesson 09's 47 trees from 83 s to 67 s, and
 * with 6 lesson 03's 52 still used only 54 % of two cores (10: 42 s instead of 52).
 * WORKBOOK_CATALOG_WORKERS overrides.
 */
const CATALOG_WORKERS = Number(process.env.WORKBOOK_CATALOG_WORKERS) || 8;

/**
 * Applies every patch to its own copy of the solution and runs the lesson's tests on each
 * copy, all in one vitest run (the files spread over the workers), then judges each. Unless
 * every test is asked for, a mistake with recorded catchers runs those tests alone; one they
 * no longer catch runs again on every test, in a second run.
 */
export async function runCatalog(entries: CatalogEntry[], reporters: Reporter[], { everyTest = false } = {}): Promise<Judgement[]> {
  const broken: Judgement[] = [];
  const runnable: CatalogEntry[] = [];
  for (const entry of entries) {
    try {
      buildTree(entry);
      runnable.push(entry);
    } catch (err) {
      broken.push({ entry, ok: false, summary: (err as Error).message, failures: [] });
    }
  }
  if (!runnable.length) return broken;
  const only = new Set(everyTest ? [] : runnable.filter((e) => e.kind === 'mistakes' && e.catchers));
  const judged = await runTrees(runnable, reporters, { everyTest, only });
  const missed = judged.filter((j) => only.has(j.entry) && !j.ok).map((j) => j.entry);
  const again = missed.length ? await runTrees(missed, reporters, { everyTest }) : [];
  for (const j of again) j.recordMissed = true;
  return [...judged.filter((j) => !missed.includes(j.entry)), ...again, ...broken];
}

async function runTrees(entries: CatalogEntry[], reporters: Reporter[], plan: Parameters<typeof writePlan>[1]): Promise<Judgement[]> {
  writePlan(entries, plan);
  process.env.WORKBOOK_CATALOG = planFile;
  // Some mistakes leak abort listeners on purpose; their tests see the warning as an event,
  // and it need not be printed over the report.
  process.env.NODE_NO_WARNINGS = '1';
  try {
    const results = await runOnce({ projects: entries.map((e) => e.project), target: 'solutions', reporters, maxWorkers: CATALOG_WORKERS });
    return entries.map((e) => judgeEntry(e, results.get(e.project)));
  } finally {
    rmSync(planFile, { force: true });
    delete process.env.WORKBOOK_CATALOG;
    delete process.env.NODE_NO_WARNINGS;
  }
}

/**
 * Lessons named on the command line ("2", "02", "02-framing"), or all of them. Unknown
 * names are an error worth a clear message, not an empty run.
 */
export function pickLessons(args: string[]): LessonInfo[] {
  const names = args.filter((a) => !a.startsWith('-'));
  if (!names.length) return listLessons();
  return names.map((name) => {
    const lesson = findLesson(name);
    if (!lesson) {
      const known = listLessons().map((l) => l.slug).join(', ');
      throw new Error(`No lesson "${name}". The lessons are: ${known}`);
    }
    return lesson;
  });
}

export interface Typecheck {
  ok: boolean;
  /** The first lines tsc printed. */
  output: string;
  ms: number;
}

/** tsc --noEmit on a tsconfig (the project's own, or the catalog's). */
export function runTypecheck(project: string): Promise<Typecheck> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [`${projectRoot}/node_modules/typescript/bin/tsc`, '--noEmit', '-p', project], { cwd: projectRoot });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('close', (code) => resolve({ ok: code === 0, output: output.trim().split('\n').slice(0, 20).join('\n'), ms: performance.now() - t0 }));
  });
}

/** Typechecks every patched lesson with the project's settings (a mistake must compile). */
export function typecheckTrees(entries: CatalogEntry[]): Promise<Typecheck> {
  mkdirSync(catalogRoot, { recursive: true });
  const file = path.join(catalogRoot, `tsconfig-${process.pid}.json`);
  const include = entries.map((e) => path.join(e.tree, e.lesson.slug));
  writeFileSync(file, JSON.stringify({ extends: path.join(projectRoot, 'tsconfig.json'), include }, null, 2));
  return runTypecheck(file).finally(() => rmSync(file, { force: true }));
}
