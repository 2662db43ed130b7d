// `tsx --import ./runtime/targets/register.ts file.ts` runs any lesson file with the
// same target choice as the tests (WORKBOOK_TARGET, WORKBOOK_ISOLATE).
import { register } from 'node:module';
register('./node-hooks.ts', import.meta.url);
