// A client of the reference gateway for the runtime tests that run it as processes
// (cluster, Redis): HELLO with the token, then a SUBSCRIBE if asked, each answer awaited.
import { decodeTopicBody } from '../../solutions/09-gateway/topics.ts';
import { FrameType, type Harness, type TestClient } from '../../runtime/harness/index.ts';

export async function greetedClient(h: Harness, port: number, token: string, topic?: string): Promise<TestClient> {
  const c = await h.connect(port);
  c.send(FrameType.HELLO, JSON.stringify({ token, client: 'runtime-test' }));
  await c.waitForFrames(1, 'the HELLO reply', 5000);
  if (topic) {
    c.send(FrameType.SUBSCRIBE, topic);
    await c.waitForFrames(2, `the ACK of SUBSCRIBE ${topic}`, 5000);
  }
  return c;
}

/** The text of every MESSAGE received, in order. */
export const messages = (c: TestClient) => c.frames.filter((f) => f.type === FrameType.MESSAGE).map((f) => decodeTopicBody(f.body)!.message.toString());
