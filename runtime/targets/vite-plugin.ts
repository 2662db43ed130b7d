// The Vite (and so vitest) side of target resolution: see resolve.ts.
import type { Plugin } from 'vite';
import { redirect, resolveTargetSpecifier, type TargetChoice } from './resolve.ts';

export function workbookTargets(choice: TargetChoice): Plugin {
  return {
    name: 'workbook-targets',
    enforce: 'pre',
    async resolveId(source, importer, options) {
      const direct = resolveTargetSpecifier(source, choice);
      if (direct) return direct;
      if (!importer || !source.startsWith('.')) return null;
      const resolved = await this.resolve(source, importer, { ...options, skipSelf: true });
      if (!resolved || resolved.external) return resolved;
      const moved = redirect(resolved.id, choice);
      return moved === resolved.id ? resolved : { ...resolved, id: moved };
    },
  };
}
