// The Node side of target resolution (for tsx and plain node): a module resolve hook
// that sends `#target/...` and every import landing in a lesson directory to the tree
// chosen by WORKBOOK_TARGET / WORKBOOK_ISOLATE. See resolve.ts.
import { fileURLToPath, pathToFileURL } from 'node:url';
import { redirect, resolveTargetSpecifier, targetFromEnv } from './resolve.ts';

type Next = (spec: string, ctx?: unknown) => Promise<{ url: string }>;
const choice = targetFromEnv();

export async function resolve(spec: string, ctx: unknown, next: Next) {
  // Hand the redirected file back to the next resolver (tsx), which marks it as TypeScript.
  const direct = resolveTargetSpecifier(spec, choice);
  if (direct) return next(pathToFileURL(direct).href, ctx);
  const result = await next(spec, ctx);
  if (!result.url.startsWith('file:')) return result;
  const file = fileURLToPath(result.url.split('?')[0]!);
  const moved = redirect(file, choice);
  return moved === file ? result : next(pathToFileURL(moved).href, ctx);
}
