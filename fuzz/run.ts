// `npm run fuzz`: fast-check against the decoder, the PUBLISH body and the gateway's
// frame handlers. 100,000 cases by default; `--cases N` for another total, `--seed S`
// to replay a failure (fast-check prints the seed and the shrunk case), `--mine` to
// fuzz your gateway (lessons/09-gateway) instead of the reference.
import fc from 'fast-check';
import { parseArgs } from 'node:util';
import type { Gateway } from '../solutions/09-gateway/gateway.ts';
import { decoderHostile, decoderRoundTrip, gatewaySessions, startFuzzGateway, topicBodies } from './properties.ts';

const { values: flags } = parseArgs({ options: { cases: { type: 'string', default: '100000' }, seed: { type: 'string' }, mine: { type: 'boolean', default: false } } });
const total = Number(flags.cases);
const seed = flags.seed === undefined ? undefined : Number(flags.seed);

// A crash or an unhandled rejection anywhere in the gateway fails the run, whichever
// case was running: the gateway must survive anything a client sends.
const crashes: unknown[] = [];
process.on('uncaughtException', (err) => crashes.push(err));
process.on('unhandledRejection', (err) => crashes.push(err));

let gateway: Gateway | undefined;
// A socket case costs ~100x a decoder case: the gateway gets 10 % of the total.
const plan = [
  { name: 'decoder: whole frames, any cutting', property: decoderRoundTrip, runs: Math.round(total * 0.35) },
  { name: 'decoder: any bytes, any cutting', property: decoderHostile, runs: Math.round(total * 0.35) },
  { name: 'PUBLISH bodies', property: topicBodies, runs: Math.round(total * 0.2) },
  { name: 'gateway: random sessions, 1-3 clients', property: gatewaySessions(() => gateway!), runs: Math.max(1, Math.round(total * 0.1)) },
];

let failed = false;
let cases = 0;
gateway = await startFuzzGateway(flags.mine);
try {
  for (const { name, property, runs } of plan) {
    const started = performance.now();
    const result = await fc.check(property as fc.IAsyncProperty<unknown>, { numRuns: runs, seed });
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    cases += result.numRuns;
    if (result.failed) {
      failed = true;
      console.log(`✗ ${name}: failed after ${result.numRuns} cases (${seconds} s)\n${fc.defaultReportMessage(result)}\n${(result.errorInstance as Error)?.message ?? ""}`);
    } else console.log(`✓ ${name}: ${result.numRuns} cases, ${seconds} s`);
    if (crashes.length) break;
  }
} finally {
  await gateway.stop();
}
if (crashes.length) {
  failed = true;
  console.log(`✗ the process saw ${crashes.length} uncaught error(s); the first: ${(crashes[0] as Error)?.stack ?? crashes[0]}`);
}
console.log(`${cases} cases, ${failed ? 'FAILED' : 'all held'}`);
process.exitCode = failed ? 1 : 0;
