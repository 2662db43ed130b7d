// The Node side of target resolution (for tsx and plain node): a module resolve hook
// that sends `#target/...` and every import landing in a lesson directory to the tree
// chosen by WORKBOOK_TARGET / WORKBOOK_ISOLATE. See resolve.ts.
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { projectRoot, redirect, resolveTargetSpecifier, targetFromEnv } from './resolve.ts';

type Resolved = { url: string; format?: string | null };
type Next = (spec: string, ctx?: unknown) => Promise<Resolved>;
const choice = targetFromEnv();

export async function resolve(spec: string, ctx: unknown, next: Next) {
  // Hand the redirected file back to the next resolver (tsx), which marks it as TypeScript.
  const direct = resolveTargetSpecifier(spec, choice);
  if (direct) return asModule(await next(pathToFileURL(direct).href, ctx));
  const result = await nextOrFromProject(spec, ctx, next);
  if (!result.url.startsWith('file:')) return result;
  const file = fileOf(result.url);
  const moved = redirect(file, choice);
  return asModule(moved === file ? result : await next(pathToFileURL(moved).href, ctx));
}

/**
 * A tree elsewhere has no node_modules of its own, so its packages (pino, prom-client) are
 * not found from where it lives: they come from the workbook's, as they do for the tests.
 */
async function nextOrFromProject(spec: string, ctx: unknown, next: Next): Promise<Resolved> {
  try {
    return await next(spec, ctx);
  } catch (err) {
    const parent = (ctx as { parentURL?: string } | undefined)?.parentURL;
    const fromPackage = !/^(\.|\/|file:|node:)/.test(spec);
    if ((err as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND' || !fromPackage || !parent?.startsWith('file:') || !isOutside(fileOf(parent))) throw err;
    return next(spec, { ...(ctx as object), parentURL: pathToFileURL(path.join(projectRoot, 'package.json')).href });
  }
}

const isOutside = (file: string) => path.relative(projectRoot, file).startsWith('..');

/**
 * Lesson code is ESM wherever the tree lives. Inside the project the package.json says so;
 * a tree elsewhere (WORKBOOK_TARGET=/some/dir) has none, and tsx would compile it as
 * CommonJS, where top-level await fails. So say it here.
 */
function asModule(result: Resolved): Resolved {
  if (!result.url.startsWith('file:')) return result;
  const file = fileOf(result.url);
  if (!isOutside(file) || !/\.m?ts$/.test(file)) return result;
  return { url: pathToFileURL(file).href, format: 'module' };
}

/** The file a URL names. tsx marks a file it takes for CommonJS with a query, sometimes %-encoded. */
function fileOf(url: string): string {
  return fileURLToPath(url.split('?')[0]!).replace(/\?.*$/, '');
}
