// Lesson 02: TCP is a byte stream. Whatever way the bytes of a few frames are cut into
// 'data' events, the decoder gives back exactly those frames, and it refuses a length it
// will not accept before spending memory on it.
import { describe, test } from 'vitest';
import fc from 'fast-check';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { encodeFrame, FrameDecoder } from '#target/02-framing/codec.ts';
import { startEchoServer } from '#target/02-framing/echo.ts';
import {
  check, describeFrame, eventually, fail, FrameType, HEADER_BYTES, MAX_FRAME_BYTES, useHarness, type Frame,
} from '../runtime/harness/index.ts';

const h = useHarness('02');
// How long a reply or a refusal may take. The server answers within a turn of its event
// loop; 500 ms is ample even on a loaded machine.
const REPLY_MS = 500;

const sample = (): Array<[number, string]> => [
  [FrameType.DATA, 'first'],
  [FrameType.PING, ''],
  [FrameType.DATA, 'the third frame, a little longer than the others'],
];
const encodeAll = (frames: Array<[number, string]>) => Buffer.concat(frames.map(([t, b]) => encodeFrame(t, b)));
const show = (frames: Frame[]) => (frames.length ? frames.map(describeFrame).join(', ') : 'no frames');
const expectedText = (frames: Array<[number, string]>) => show(frames.map(([type, body]) => ({ type, body: Buffer.from(body) })));

/**
 * Feeds `chunks` to a fresh decoder and returns the frames, turning a throw into a
 * teaching failure (a decoder that throws on good input would take its connection down).
 */
function decodeChunks(chunks: Buffer[]): Frame[] {
  const decoder = new FrameDecoder();
  const frames: Frame[] = [];
  chunks.forEach((chunk, i) => {
    try {
      frames.push(...decoder.push(chunk));
    } catch (err) {
      if (err instanceof TypeError || err instanceof ReferenceError) throw err; // a slip, not the lesson
      fail('The decoder threw on well-formed input.', {
        observed: `push() threw ${(err as Error).name}: ${(err as Error).message}\nwhile being fed chunk ${i + 1} of ${chunks.length}, sizes [${chunks.map((c) => c.length).join(', ')}]`,
        expected: 'valid frames decode whatever the chunk sizes',
        idea: 'a chunk can end anywhere, even inside the 4-byte length: keep what you have until the rest arrives',
      });
    }
  });
  return frames;
}

/** One push(), with a throw on good input turned into a teaching failure like decodeChunks. */
function pushOrFail(decoder: FrameDecoder, chunk: Buffer, what: string): Frame[] {
  try {
    return decoder.push(chunk);
  } catch (err) {
    if (err instanceof TypeError || err instanceof ReferenceError) throw err; // a slip, not the lesson
    fail('The decoder threw on well-formed input.', {
      observed: `push() threw ${(err as Error).name}: ${(err as Error).message}\nwhile being fed ${what}`,
      expected: 'valid frames decode whatever the chunk sizes',
      idea: 'a chunk can end anywhere, even inside the 4-byte length: keep what you have until the rest arrives',
    });
  }
}

function sameFrames(actual: Frame[], expected: Array<[number, string]>): boolean {
  return actual.length === expected.length
    && actual.every((f, i) => f.type === expected[i]![0] && f.body.toString() === expected[i]![1]);
}

describe('baseline: frames that arrive whole', () => {
  test('encodeFrame writes the documented layout', () => {
    const bytes = encodeFrame(FrameType.DATA, 'hi');
    const expected = Buffer.from([0, 0, 0, 3, FrameType.DATA, 0x68, 0x69]);
    check(bytes.equals(expected), 'encodeFrame does not follow lessons/PROTOCOL.md.', {
      observed: `encodeFrame(DATA, "hi") = <${bytes.toString('hex')}>`,
      expected: `<${expected.toString('hex')}>: u32 big-endian payload length 3, type 0x04, then "hi"`,
      idea: 'the length counts the type byte and the body, not the header itself',
    });
  });

  test('one frame in one chunk decodes', () => {
    const frames = decodeChunks([encodeFrame(FrameType.DATA, 'hello')]);
    check(sameFrames(frames, [[FrameType.DATA, 'hello']]), 'A whole frame did not decode.', {
      observed: show(frames),
      expected: 'DATA "hello"',
      idea: 'the decoder reads the length, then that many bytes',
    });
  });

  test('a frame whose body arrives in pieces decodes', () => {
    const bytes = encodeFrame(FrameType.DATA, 'a body that arrives in three pieces');
    const frames = decodeChunks([bytes.subarray(0, 10), bytes.subarray(10, 20), bytes.subarray(20)]);
    check(sameFrames(frames, [[FrameType.DATA, 'a body that arrives in three pieces']]), 'A frame split inside its body did not decode.', {
      observed: show(frames),
      expected: 'DATA "a body that arrives in three pieces"',
      idea: 'a frame is complete only when its whole length has arrived',
    });
  });

  test('the echo server answers a DATA frame', async () => {
    const server = h.track(await startEchoServer());
    const client = await h.connect(server.port);
    client.send(FrameType.DATA, 'echo me');
    const [reply] = await client.waitForFrames(1, 'the echo of our DATA frame');
    check(reply!.type === FrameType.DATA && reply!.body.toString() === 'echo me', 'The echo was wrong.', {
      observed: describeFrame(reply!),
      expected: 'DATA "echo me"',
      idea: 'the server answers each frame it decodes',
    });
  });

  test('the echo server answers PING with PONG', async () => {
    const server = h.track(await startEchoServer());
    const client = await h.connect(server.port);
    client.send(FrameType.PING, 'p1');
    const [reply] = await client.waitForFrames(1, 'a PONG for our PING');
    check(reply!.type === FrameType.PONG && reply!.body.toString() === 'p1', 'PING was not answered with PONG.', {
      observed: describeFrame(reply!),
      expected: 'PONG "p1"',
      idea: 'PONG echoes the PING body so the sender can match them',
    });
  });
});

describe('a byte stream, not messages', () => {
  test('a header split across chunks decodes', () => {
    const bytes = encodeFrame(FrameType.DATA, 'split header');
    for (let cut = 1; cut < HEADER_BYTES; cut++) {
      const frames = decodeChunks([bytes.subarray(0, cut), bytes.subarray(cut)]);
      check(sameFrames(frames, [[FrameType.DATA, 'split header']]), 'A frame whose length prefix was split did not decode.', {
        observed: `chunks of ${cut} and ${bytes.length - cut} bytes gave ${show(frames)}`,
        expected: 'DATA "split header"',
        idea: 'a chunk may end inside the 4-byte length: collect all 4 bytes before reading it',
      });
    }
  });

  test('bufferedBytes counts a partial header', () => {
    const decoder = new FrameDecoder();
    const held = (): number => decoder.bufferedBytes; // read afresh each time (a getter)
    const bytes = encodeFrame(FrameType.DATA, 'partial');
    pushOrFail(decoder, bytes.subarray(0, 2), 'the first 2 bytes of a 4-byte header');
    check(held() === 2, 'bufferedBytes does not count header bytes.', {
      observed: `after 2 bytes of a frame's header, bufferedBytes is ${held()}`,
      expected: '2: the decoder holds 2 bytes of a frame that is not complete yet',
      idea: 'a frame is in progress from its first byte, header included (lesson 03 starts its frame deadline on it)',
    });
    const frames = pushOrFail(decoder, bytes.subarray(2), `the other ${bytes.length - 2} bytes of the frame`);
    check(sameFrames(frames, [[FrameType.DATA, 'partial']]) && held() === 0, 'The rest of the frame did not complete it.', {
      observed: `${show(frames)}; bufferedBytes is then ${held()}`,
      expected: 'DATA "partial", and bufferedBytes 0: nothing is held once the frame is whole',
      idea: 'bufferedBytes counts what is held of an incomplete frame, and only that',
    });
  });

  test('frames that arrive together all decode', () => {
    const frames = decodeChunks([encodeAll(sample())]);
    check(sameFrames(frames, sample()), 'Frames that arrived in one chunk were lost.', {
      observed: `one chunk holding 3 frames gave ${frames.length}: ${show(frames)}`,
      expected: expectedText(sample()),
      idea: "one 'data' event may hold several frames: keep decoding until the chunk is used up",
    });
  });

  test('every split point of three frames decodes', () => {
    const bytes = encodeAll(sample());
    for (let cut = 1; cut < bytes.length; cut++) {
      const frames = decodeChunks([bytes.subarray(0, cut), bytes.subarray(cut)]);
      check(sameFrames(frames, sample()), `Splitting the stream at byte ${cut} broke decoding.`, {
        observed: `chunks of ${cut} and ${bytes.length - cut} bytes gave ${show(frames)}`,
        expected: expectedText(sample()),
        idea: 'a chunk boundary can fall anywhere: inside a header, inside a body, between frames',
      });
    }
  });

  test('any chunking of any frames decodes to those frames', () => {
    const frameArb = fc.tuple(fc.constantFrom(FrameType.DATA, FrameType.PING, FrameType.ACK), fc.string({ maxLength: 40 }));
    const run = fc.check(
      fc.property(fc.array(frameArb, { minLength: 1, maxLength: 6 }), fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 30 }), (frames, sizes) => {
        const bytes = encodeAll(frames);
        const chunks: Buffer[] = [];
        for (let at = 0, i = 0; at < bytes.length; i++) {
          const size = sizes[i % sizes.length]!;
          chunks.push(bytes.subarray(at, at + size));
          at += size;
        }
        const decoded = decodeChunks(chunks);
        check(sameFrames(decoded, frames), 'Some chunking of valid frames did not decode to those frames.', {
          observed: `frames ${expectedText(frames)}\ncut into chunks of [${chunks.map((c) => c.length).join(', ')}] bytes gave ${show(decoded)}`,
          expected: 'the same frames, in order',
          idea: 'the frames are in the bytes, not in the chunks: decoding depends only on the bytes',
        });
      }),
      { seed: 2026, numRuns: 200 },
    );
    // fast-check shrinks a failure to a small counterexample; report that one as it failed.
    if (run.failed) throw run.errorInstance;
  });

  test('three frames in one write all get answers', async () => {
    const server = h.track(await startEchoServer());
    const client = await h.connect(server.port);
    await client.write(encodeAll([[FrameType.DATA, 'one'], [FrameType.DATA, 'two'], [FrameType.DATA, 'three']]));
    const replies = await client.waitForFrames(3, 'the echoes of three frames sent in one write (TCP delivers them as one chunk)', REPLY_MS);
    check(replies.map((r) => r.body.toString()).join(',') === 'one,two,three', 'The echoes came back wrong.', {
      observed: show(replies),
      expected: 'DATA "one", DATA "two", DATA "three"',
      idea: 'frames coalesced into one chunk are still separate frames',
    });
  });

  test('a frame sent one byte at a time gets its answer', async () => {
    const server = h.track(await startEchoServer());
    const client = await h.connect(server.port);
    // One byte per write, and a turn of the event loop between writes, so the server's
    // reads see the frame a byte at a time (Nagle is off on the test client).
    for (const byte of encodeFrame(FrameType.DATA, 'slowly')) {
      if (client.ended) break; // the server gave up on us; its last words are in client.frames
      await client.write(Buffer.from([byte])).catch(() => {});
      await nextTurn();
    }
    const [reply] = await client.waitForFrames(1, 'the echo of a frame that arrived one byte per packet', REPLY_MS);
    check(reply!.type === FrameType.DATA && reply!.body.toString() === 'slowly', 'A frame that arrived byte by byte was not echoed.', {
      observed: `the server answered ${describeFrame(reply!)}${client.closed ? ' and closed the connection' : ''}`,
      expected: 'DATA "slowly"',
      idea: 'TCP may deliver a frame in as many pieces as it has bytes',
    });
  });

  test('a length of 0 is refused', () => {
    const decoder = new FrameDecoder();
    let frames: Frame[] = [];
    let error: Error | undefined;
    try {
      frames = decoder.push(Buffer.alloc(HEADER_BYTES)); // the length 0, nothing else
    } catch (err) {
      if (err instanceof TypeError || err instanceof ReferenceError) throw err; // a slip, not the lesson
      error = err as Error;
    }
    check(error !== undefined, 'A frame length of 0 was accepted.', {
      observed: `push(<00000000>) ${frames.length ? `returned ${frames.length} frame(s), the first of type ${String(frames[0]!.type)}` : 'returned no frame and threw nothing'}`,
      expected: 'push() throws: a length of 0 cannot be a frame (lessons/PROTOCOL.md)',
      idea: 'the length is the peer\'s claim: check it is one a valid frame can have before using it',
    });
    check(!/exceeds/i.test(error!.message), 'A length of 0 was refused with a false reason.', {
      observed: `push() threw ${error!.name}: ${error!.message}`,
      expected: 'a message that says what is wrong: a frame holds at least its type byte',
      idea: 'the refusal goes to the peer in an ERROR frame: it must say what was really wrong',
    });
  });

  test('an oversize length is refused before anything is allocated', async () => {
    const server = h.track(await startEchoServer());
    const client = await h.connect(server.port);
    const claimed = 512 * 1024 * 1024;
    const before = process.memoryUsage().arrayBuffers;
    const header = Buffer.alloc(HEADER_BYTES + 1);
    header.writeUInt32BE(claimed, 0);
    header[HEADER_BYTES] = FrameType.DATA;
    await client.write(header);
    // Give the server time to act on the header: either refuse it, or (wrongly) wait for
    // 512 MiB that will never come.
    await eventually(() => {
      const grown = process.memoryUsage().arrayBuffers - before;
      check(grown < 64 * 1024 * 1024, 'The decoder allocated what the peer claimed.', {
        observed: `after a 4-byte length claiming ${claimed / 2 ** 20} MiB and a type byte, Buffer memory grew by ${Math.round(grown / 2 ** 20)} MiB`,
        expected: `a refusal: the maximum frame is ${MAX_FRAME_BYTES / 2 ** 20} MiB, checked before allocating`,
        idea: 'a length prefix is a claim by the peer: check it against your maximum before it costs you memory',
      });
      check(client.closed, 'The server kept a connection whose next frame can never be valid.', {
        observed: `the connection is still open after a header claiming ${claimed} bytes${client.frames.length ? `; received ${show(client.frames)}` : ''}`,
        expected: 'an ERROR frame, then the connection closed',
        idea: 'once framing is lost the stream cannot be resynchronised: refuse, say why, and hang up',
      });
    }, { within: REPLY_MS });
    const refusal = client.frames.find((f) => f.type === FrameType.ERROR);
    check(refusal !== undefined && refusal.body.toString().startsWith('PROTOCOL'), 'The server hung up without saying why.', {
      observed: `before the close the server sent ${show(client.frames)}`,
      expected: 'an ERROR frame "PROTOCOL ...", then the close',
      idea: 'a peer that broke the protocol should learn what it did wrong: one ERROR frame, then hang up',
    });
  });
});
