// The fuzzer, small, in every verify: the same properties `npm run fuzz` runs 100,000
// cases of, a few hundred here, so that they keep holding and keep running.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Gateway } from '../../solutions/09-gateway/gateway.ts';
import { decoderHostile, decoderRoundTrip, gatewaySessions, startFuzzGateway, topicBodies } from '../../fuzz/properties.ts';

let gateway: Gateway;
beforeAll(async () => {
  gateway = await startFuzzGateway();
});
afterAll(() => gateway.stop());

// fast-check's report (the seed and the shrunk case) as the failure message.
async function holds(property: fc.IProperty<unknown> | fc.IAsyncProperty<unknown>, numRuns: number): Promise<void> {
  const result = await fc.check(property as fc.IAsyncProperty<unknown>, { numRuns });
  expect(result.failed, result.failed ? `${fc.defaultReportMessage(result)}\n${(result.errorInstance as Error)?.message}` : '').toBe(false);
}

describe('the fuzzer', { timeout: 60_000 }, () => {
  test('the decoder returns whole frames, however they are cut', () => holds(decoderRoundTrip, 500));
  test('the decoder takes any bytes: frames, or one of its two documented errors', () => holds(decoderHostile, 500));
  test('PUBLISH bodies never throw and read back as written', () => holds(topicBodies, 300));
  test('the gateway answers every request as PROTOCOL.md says, and forgets every client that leaves', () => holds(gatewaySessions(() => gateway), 150));
});
