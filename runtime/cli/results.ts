// Test results grouped by lesson (vitest project), shared by the reporter and verify.
import type { TestModule } from 'vitest/node';

export interface TestOutcome {
  /** The test's own title: manifests name tests by it. */
  title: string;
  /** "describe > title", for display. */
  fullName: string;
  state: 'passed' | 'failed' | 'skipped' | 'pending';
  /** The first error's name and full message, when it failed. */
  errorName?: string;
  errorMessage?: string;
}

export interface ProjectResult {
  tests: TestOutcome[];
  /** Errors that stopped a test file from loading (syntax error, missing export, …). */
  loadErrors: string[];
  /** Wall time the project's files took, in ms. */
  durationMs: number;
}

export function groupByProject(modules: readonly TestModule[]): Map<string, ProjectResult> {
  const byProject = new Map<string, ProjectResult>();
  for (const module of modules) {
    const name = module.project.name;
    const row = byProject.get(name) ?? { tests: [], loadErrors: [], durationMs: 0 };
    for (const test of module.children.allTests()) {
      const result = test.result();
      const error = result.errors?.[0];
      row.tests.push({
        title: test.name,
        fullName: test.fullName,
        state: result.state,
        ...(error ? { errorName: error.name ?? 'Error', errorMessage: error.message ?? String(error) } : {}),
      });
    }
    for (const error of module.errors()) row.loadErrors.push(`${error.name ?? 'Error'}: ${error.message}`);
    row.durationMs += module.diagnostic().duration;
    byProject.set(name, row);
  }
  return byProject;
}

export const passedCount = (r: ProjectResult) => r.tests.filter((t) => t.state === 'passed').length;
export const isSolved = (r: ProjectResult) => r.loadErrors.length === 0 && r.tests.length > 0 && passedCount(r) === r.tests.length;
