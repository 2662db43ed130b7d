// npm run checksums: record the SHA-256 of every lesson test and manifest (see checksums.ts).
import { writeChecksums } from './checksums.ts';

console.log(`runtime/checksums.json: ${writeChecksums()} files`);
