// `npm run server`: the capstone gateway as a process. The reference one from solutions/
// by default, so that it works on a fresh clone; `--mine` runs yours from lessons/.
// Every other flag goes to the gateway's main.ts (see lessons/09-gateway/README.md).
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { lessonsDir, solutionsDir } from '../targets/resolve.ts';

const mine = process.argv.includes('--mine');
const main = path.join(mine ? lessonsDir : solutionsDir, '09-gateway', 'main.ts');
console.error(`starting ${path.relative(process.cwd(), main)}${mine ? '' : ' (the reference; --mine runs yours)'}`);
await import(pathToFileURL(main).href);
