// npm run catalog -- NN [name ...]: apply a lesson's mistakes and alternatives to copies of
// its solution and say, for each, which tests caught it (or that it survived). The tool for
// writing a catalog; npm run verify runs the same check for every lesson.
//   --mistakes / --alternatives   only that kind
//   --first                       stop each mistake at the first test that catches it
//                                 (as verify does: faster, names one catching test)
//   --from <dir>                  patches from another tree laid out like solutions/
//                                 (<dir>/NN-slug/mistakes/*.patch): a held-out set
//   --record                      write each lesson's mistakes/caught-by.json: the first
//                                 two tests that caught each mistake, which verify runs first
import path from 'node:path';
import { listCatalog, writeRecord, type PatchKind } from './catalog.ts';
import { pickLessons, runCatalog, typecheckTrees } from './run.ts';

const argv = process.argv.slice(2);
const fromAt = argv.indexOf('--from');
const from = fromAt >= 0 ? path.resolve(argv[fromAt + 1] ?? '.') : undefined;
const args = fromAt >= 0 ? argv.filter((_, i) => i !== fromAt && i !== fromAt + 1) : argv;
const lessonArgs = args.filter((a) => /^\d/.test(a));
const names = new Set(args.filter((a) => !a.startsWith('-') && !/^\d/.test(a)));
const kinds: PatchKind[] = args.includes('--mistakes') ? ['mistakes'] : args.includes('--alternatives') ? ['alternatives'] : ['mistakes', 'alternatives'];

const entries = pickLessons(lessonArgs)
  .flatMap((l) => listCatalog(l, kinds, from))
  .filter((e) => !names.size || names.has(e.name));
if (!entries.length) {
  console.log('No patches found: they live in solutions/NN-slug/mistakes/*.patch and alternatives/*.patch.');
  process.exit(1);
}
const started = performance.now();
// Every test by default, so the report shows each test that catches a mistake.
const record = args.includes('--record');
if (record && (from || args.includes('--first') || names.size || args.includes('--alternatives'))) {
  console.log('--record needs every mistake of the lesson run on every test: no --from, --first, names or --alternatives.');
  process.exit(1);
}
const judged = await runCatalog(entries, [{}], { everyTest: !args.includes('--first') });
const typecheck = await typecheckTrees(entries.filter((e) => judged.some((j) => j.entry === e && !j.summary.includes('does not apply'))));
let bad = typecheck.ok ? 0 : 1;
for (const j of judged.sort((a, b) => a.entry.project.localeCompare(b.entry.project))) {
  if (!j.ok) bad++;
  console.log(`${j.ok ? '✓' : '✗'} ${j.entry.lesson.nn} ${j.entry.kind.slice(0, -1)} ${j.entry.name}: ${j.summary}`);
  for (const f of j.failures) console.log(`      ${f.errorName === 'LessonFailure' ? '' : `[${f.errorName}] `}${f.title}: ${f.firstLine}`);
}
if (record) console.log(`\nRecorded the first two catching tests of each caught mistake in ${writeRecord(judged).join(', ')}`);
console.log(typecheck.ok ? '\n✓ every patched tree typechecks' : `\n✗ a patched tree does not typecheck (a mistake must compile):\n${typecheck.output}`);
console.log(`\n${judged.length} patch(es) in ${((performance.now() - started) / 1000).toFixed(1)} s`);
console.log(`${judged.length + 1 - bad} passed, ${bad} failed`);
process.exitCode = bad ? 1 : 0;
