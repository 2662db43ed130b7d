// Which tree a lesson's code comes from. Tests never import lessons/ or solutions/
// directly: they import `#target/NN-slug/file.ts`, and every import that lands in a
// lesson directory (including a lesson's relative import of an earlier lesson) is
// sent to the tree chosen here. One function decides, for Vite and for Node alike.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const lessonsDir = path.join(projectRoot, 'lessons');
export const solutionsDir = path.join(projectRoot, 'solutions');

export interface TargetChoice {
  /** The tree under test: lessons/ by default, solutions/, or any directory laid out like lessons/. */
  target: string;
  /** Lesson number judged alone: it comes from `target`, every other lesson from solutions/. */
  isolate?: string | undefined;
}

/** Reads WORKBOOK_TARGET and WORKBOOK_ISOLATE. */
export function targetFromEnv(env: NodeJS.ProcessEnv = process.env): TargetChoice {
  return { target: targetDir(env.WORKBOOK_TARGET), isolate: lessonNumber(env.WORKBOOK_ISOLATE) };
}

export function targetDir(name: string | undefined): string {
  if (!name || name === 'lessons') return lessonsDir;
  if (name === 'solutions') return solutionsDir;
  return path.resolve(projectRoot, name);
}

/** "3", "03" and "03-deadlines" all name lesson 03. */
export function lessonNumber(name: string | undefined): string | undefined {
  const m = name?.match(/^(\d{1,2})/);
  return m ? m[1]!.padStart(2, '0') : undefined;
}

/** The tree that lesson `nn` is read from under this choice. */
export function treeFor(nn: string, choice: TargetChoice): string {
  return choice.isolate && nn !== choice.isolate ? solutionsDir : choice.target;
}

const trees = () => [lessonsDir, solutionsDir];

/**
 * If `file` lies in a lesson directory of any known tree, the same file in the tree
 * chosen for that lesson; otherwise `file` unchanged.
 */
export function redirect(file: string, choice: TargetChoice): string {
  for (const tree of new Set([...trees(), choice.target])) {
    const rel = path.relative(tree, file);
    if (rel.startsWith('..') || path.isAbsolute(rel)) continue;
    const [lessonDir, ...rest] = rel.split(path.sep);
    const nn = lessonNumber(lessonDir);
    if (!nn || rest.length === 0) continue;
    return path.join(treeFor(nn, choice), lessonDir!, ...rest);
  }
  return file;
}

/** The protocol constants every lesson imports as `#protocol`, from any tree, anywhere. */
export const protocolFile = path.join(projectRoot, 'runtime', 'protocol.ts');

/** `#target/02-framing/codec.ts` → the absolute file in the chosen tree; `#protocol` → protocolFile. */
export function resolveTargetSpecifier(spec: string, choice: TargetChoice): string | undefined {
  if (spec === '#protocol') return protocolFile;
  if (!spec.startsWith('#target/')) return undefined;
  return redirect(path.join(lessonsDir, spec.slice('#target/'.length)), choice);
}
