// Lesson 02: TCP is a byte stream. Whatever way the bytes of a few frames are cut into
// 'data' events, the decoder gives back exactly those frames, and it refuses a length it
// will not accept before spending memory on it.
import { describe, test } from 'vitest';
import fc from 'fast-check';
import net from 'node:net';
import { once } from 'node:events';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { encodeFrame, FrameDecoder } from '#target/02-framing/codec.ts';
import { startEchoServer } from '#target/02-framing/echo.ts';
import { readFrames } from '#target/02-framing/read-frames.ts';
import {
  check, describeFrame, eventually, fail, FrameType, HEADER_BYTES, MAX_FRAME_BYTES, useHarness, type Frame, type TestClient,
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

/**
 * Records every Buffer allocation (its size) made through Buffer.alloc, allocUnsafe,
 * allocUnsafeSlow and, through allocUnsafe, Buffer.concat, until restore(). The decoder
 * runs in this process, so this sees an allocation the moment it is made: reading memory
 * afterwards would depend on when the GC last ran. (A candidate for the harness.)
 */
function watchAllocations() {
  const sizes: number[] = [];
  const names = ['alloc', 'allocUnsafe', 'allocUnsafeSlow'] as const;
  const originals = names.map((name) => [name, Buffer[name]] as const);
  let depth = 0; // concat() calls allocUnsafe(): count the outer call only
  for (const [name, original] of originals) {
    const wrapped = function (this: unknown, size: number, ...rest: unknown[]) {
      if (depth === 0) sizes.push(size);
      depth++;
      try {
        return (original as (...args: unknown[]) => Buffer).call(this, size, ...rest);
      } finally {
        depth--;
      }
    };
    Object.defineProperty(Buffer, name, { value: wrapped, configurable: true, writable: true });
  }
  let restored = false;
  return {
    sizes,
    get largest() {
      return Math.max(0, ...sizes);
    },
    get total() {
      return sizes.reduce((a, b) => a + b, 0);
    },
    restore() {
      if (restored) return;
      restored = true;
      for (const [name, original] of originals) Object.defineProperty(Buffer, name, { value: original, configurable: true, writable: true });
    },
  };
}

const MiB = 2 ** 20;
const mib = (n: number) => `${(n / MiB).toFixed(n < MiB ? 3 : 0)} MiB`;

/** A header alone (4 bytes) announcing `length`. */
/**
 * A bare listener and one client connected to it: the test gets the server's socket to
 * attach a reader to itself. Both are closed after the test.
 */
async function connectedPair(): Promise<{ client: TestClient; socket: net.Socket }> {
  const listener = net.createServer();
  h.defer(() => new Promise((resolve) => listener.close(resolve)));
  const accepted = once(listener, 'connection') as Promise<[net.Socket]>;
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const client = await h.connect((listener.address() as net.AddressInfo).port);
  const [socket] = await accepted;
  h.defer(() => socket.destroy());
  socket.on('error', () => {});
  return { client, socket };
}

function headerClaiming(length: number): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32BE(length, 0);
  return header;
}

/** push() that returns the error it threw instead (a TypeError is a slip and rethrown). */
function pushCatching(decoder: FrameDecoder, chunk: Buffer): { frames: Frame[]; error?: Error } {
  try {
    return { frames: decoder.push(chunk) };
  } catch (err) {
    if (err instanceof TypeError || err instanceof ReferenceError) throw err;
    return { frames: [], error: err as Error };
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
    const text = 'café ☕';
    const wide = encodeFrame(FrameType.DATA, text);
    const bodyBytes = Buffer.byteLength(text);
    check(wide.readUInt32BE(0) === 1 + bodyBytes && wide.length === HEADER_BYTES + 1 + bodyBytes && wide.subarray(HEADER_BYTES + 1).toString() === text, 'encodeFrame counts characters where the protocol counts bytes.', {
      observed: `encodeFrame(DATA, ${JSON.stringify(text)}) = <${wide.toString('hex')}>: length field ${wide.readUInt32BE(0)}, ${wide.length - HEADER_BYTES - 1} bytes after the type byte`,
      expected: `length field ${1 + bodyBytes}, then the type byte and the ${bodyBytes} UTF-8 bytes of the body (${text.length} characters)`,
      idea: 'framing is in bytes: a string\'s length in characters is not its length on the wire (Buffer.byteLength, or encode first and measure the Buffer)',
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
    // Every way to cut the 4 header bytes into pieces (1+3, 2+2, 1+1+2, 1+1+1+1, ...):
    // a header may arrive in more than two pieces.
    for (let mask = 1; mask < 2 ** (HEADER_BYTES - 1); mask++) {
      const cuts = [...Array(HEADER_BYTES - 1).keys()].filter((i) => mask & (1 << i)).map((i) => i + 1);
      const edges = [0, ...cuts, bytes.length];
      const chunks = edges.slice(1).map((end, i) => bytes.subarray(edges[i], end));
      const frames = decodeChunks(chunks);
      check(sameFrames(frames, [[FrameType.DATA, 'split header']]), 'A frame whose length prefix was split did not decode.', {
        observed: `chunks of [${chunks.map((c) => c.length).join(', ')}] bytes gave ${show(frames)}`,
        expected: 'DATA "split header"',
        idea: 'a chunk may end inside the 4-byte length, more than once: collect all 4 bytes, however many chunks bring them, before reading it',
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
    const claimed = 512 * MiB;
    const header = Buffer.alloc(HEADER_BYTES + 1);
    header.writeUInt32BE(claimed, 0);
    header[HEADER_BYTES] = FrameType.DATA;
    const allocations = watchAllocations();
    h.defer(() => allocations.restore());
    await client.write(header);
    // Either the server refuses the header, or it (wrongly) waits for 512 MiB that will
    // never come; the allocation, if any, was recorded the moment it was made.
    try {
      await eventually(() => {
        check(allocations.largest <= 2 * MAX_FRAME_BYTES, 'The decoder allocated what the peer claimed.', {
          observed: `after a 4-byte length claiming ${mib(claimed)} and a type byte, the server allocated a Buffer of ${mib(allocations.largest)}${client.closed ? ' (and then refused the frame: too late, the memory was committed)' : ''}`,
          expected: `a refusal before any allocation: the maximum frame is ${mib(MAX_FRAME_BYTES)}`,
          idea: 'a length prefix is a claim by the peer: check it against your maximum before it costs you memory',
        });
        check(client.closed, 'The server kept a connection whose next frame can never be valid.', {
          observed: `the connection is still open ${REPLY_MS} ms after a header claiming ${claimed} bytes${client.frames.length ? `; received ${show(client.frames)}` : ''}`,
          expected: 'an ERROR frame, then the connection closed, as soon as the header arrived',
          idea: 'refuse at the header, not once the body is in: a peer that never sends the body would hold the connection (and whatever it buffered) for ever',
        });
      }, { within: REPLY_MS });
    } finally {
      allocations.restore();
    }
    const refusal = client.frames.find((f) => f.type === FrameType.ERROR);
    check(refusal !== undefined && refusal.body.toString().startsWith('PROTOCOL'), 'The server hung up without saying why.', {
      observed: `before the close the server sent ${show(client.frames)}`,
      expected: 'an ERROR frame "PROTOCOL ...", then the close',
      idea: 'a peer that broke the protocol should learn what it did wrong: one ERROR frame, then hang up',
    });
  });

  test('a header claiming too much throws at once, with nothing allocated', () => {
    const claimed = 512 * MiB;
    const decoder = new FrameDecoder();
    const allocations = watchAllocations();
    const before = process.memoryUsage().arrayBuffers;
    let outcome: ReturnType<typeof pushCatching>;
    let grown: number;
    try {
      outcome = pushCatching(decoder, headerClaiming(claimed));
      // Read at once, before the GC can give an allocation back (a second witness, for
      // memory taken other than through Buffer's allocators).
      grown = process.memoryUsage().arrayBuffers - before;
    } finally {
      allocations.restore();
    }
    check(allocations.largest <= 2 * MAX_FRAME_BYTES && grown < 64 * MiB, 'The decoder allocated what the peer claimed.', {
      observed: `push(a header claiming ${mib(claimed)}) allocated ${allocations.largest >= grown ? `a Buffer of ${mib(allocations.largest)}` : `${mib(grown)} of ArrayBuffer memory`}${outcome.error ? `, then threw ${outcome.error.name}` : ''}`,
      expected: `a throw before any allocation: the maximum frame is ${mib(MAX_FRAME_BYTES)}`,
      idea: 'a length prefix is a claim by the peer: check it against your maximum before it costs you memory',
    });
    check(outcome.error !== undefined, 'A header claiming more than the maximum was not refused when it arrived.', {
      observed: `push(<${headerClaiming(claimed).toString('hex')}>) returned ${outcome.frames.length} frame(s) and threw nothing; bufferedBytes is ${decoder.bufferedBytes}`,
      expected: 'push() throws as soon as the 4 bytes of the length are in, without waiting for the body',
      idea: 'refuse at the header: waiting for the body lets a peer hold the connection, and everything it trickles in, up to its own claim',
    });
  });

  test('a frame of exactly the maximum decodes, one byte more is refused at its header', () => {
    const body = Buffer.alloc(MAX_FRAME_BYTES - 1, 0x61);
    const atMax = pushCatching(new FrameDecoder(), encodeFrame(FrameType.DATA, body));
    check(!atMax.error && atMax.frames.length === 1 && atMax.frames[0]!.body.length === body.length, 'A frame of exactly the maximum size was refused.', {
      observed: `a frame whose length field is ${MAX_FRAME_BYTES} (the maximum) ${atMax.error ? `made push() throw ${atMax.error.name}: ${atMax.error.message}` : `gave ${atMax.frames.length} frame(s)`}`,
      expected: `one DATA frame: lessons/PROTOCOL.md allows lengths 1..${MAX_FRAME_BYTES}, both ends included`,
      idea: 'the maximum is the largest length allowed: refuse length > max, not length >= max',
    });
    const over = pushCatching(new FrameDecoder(), headerClaiming(MAX_FRAME_BYTES + 1));
    check(over.error !== undefined, 'A header one byte over the maximum was not refused when it arrived.', {
      observed: `push(a header with length ${MAX_FRAME_BYTES + 1}, and no body yet) returned ${over.frames.length} frame(s) and threw nothing`,
      expected: 'push() throws as soon as the length is read, before any of the body arrives',
      idea: 'the limit is checked on the header, the moment the length is known, and it is exact',
    });
  });

  test('the echo server enforces the maximum it was given', async () => {
    const server = h.track(await startEchoServer({ maxFrameBytes: 1024 }));
    const client = await h.connect(server.port);
    await client.write(headerClaiming(1025));
    await eventually(() => {
      check(client.closed && client.frames.some((f) => f.type === FrameType.ERROR), 'A server started with maxFrameBytes 1024 accepted a longer frame.', {
        observed: `${REPLY_MS} ms after a header claiming 1025 bytes: ${client.closed ? 'closed' : 'still open'}, received ${show(client.frames)}`,
        expected: 'an ERROR frame and the close: the server was configured for frames of at most 1024 bytes',
        idea: "the limit is the server's configuration: pass maxFrameBytes on to the decoder that enforces it",
      });
    }, { within: REPLY_MS });
  });

  test('a big frame in small chunks is copied once, not once per chunk', () => {
    const body = Buffer.alloc(256 * 1024, 0x62);
    const bytes = encodeFrame(FrameType.DATA, body);
    const decoder = new FrameDecoder();
    const frames: Frame[] = [];
    const allocations = watchAllocations();
    try {
      for (let at = 0; at < bytes.length; at += 1024) frames.push(...pushOrFail(decoder, bytes.subarray(at, at + 1024), `a ${mib(bytes.length)} frame 1 KiB at a time`));
    } finally {
      allocations.restore();
    }
    check(frames.length === 1 && frames[0]!.body.equals(body), 'A big frame fed in 1 KiB chunks did not decode.', {
      observed: show(frames).slice(0, 200),
      expected: 'one DATA frame of 256 KiB',
      idea: 'a frame is complete only when its whole length has arrived',
    });
    check(allocations.total <= 4 * bytes.length, 'The decoder copies everything it holds on every chunk.', {
      observed: `feeding a ${mib(bytes.length)} frame in ${Math.ceil(bytes.length / 1024)} chunks of 1 KiB allocated ${mib(allocations.total)} in ${allocations.sizes.length} Buffer(s)`,
      expected: `about the frame's size (at most ${mib(4 * bytes.length)}): each byte copied once or twice`,
      idea: 'Buffer.concat([held, chunk]) on every chunk copies all that is held each time: the cost grows with the square of the frame size. Allocate the frame once its length is known, or keep the chunks and join them once',
    });
  });

  test('a frame handed out stays intact when later frames arrive', () => {
    const decoder = new FrameDecoder();
    const first = pushOrFail(decoder, encodeFrame(FrameType.DATA, 'the first frame, kept by its handler'), 'a first frame');
    const later = [...pushOrFail(decoder, encodeFrame(FrameType.DATA, 'a second one'), 'a second frame'), ...pushOrFail(decoder, encodeFrame(FrameType.PING, 'third'), 'a third frame')];
    check(sameFrames(first, [[FrameType.DATA, 'the first frame, kept by its handler']]) && later.length === 2, 'A frame changed after the decoder handed it out.', {
      observed: `the first frame now reads ${show(first)} after two more frames were decoded (${show(later)})`,
      expected: 'DATA "the first frame, kept by its handler": a frame, once returned, belongs to its caller',
      idea: 'a handler may keep a frame (queue it, answer later): never hand out a view of a buffer the decoder will write into again',
    });
  });

  test('bufferedBytes counts what is held, not what is claimed', () => {
    const decoder = new FrameDecoder();
    const held = (): number => decoder.bufferedBytes;
    const bytes = encodeFrame(FrameType.DATA, Buffer.alloc(1000, 0x63));
    pushOrFail(decoder, bytes.subarray(0, HEADER_BYTES + 10), 'a header and the first 10 bytes of a 1001-byte payload');
    check(held() === 10 || held() === HEADER_BYTES + 10, 'bufferedBytes does not count the bytes held.', {
      observed: `after the header and 10 bytes of a 1001-byte payload, bufferedBytes is ${held()}`,
      expected: `10, or ${HEADER_BYTES + 10} counting the header: what has arrived of the incomplete frame, not what it claims`,
      idea: 'bufferedBytes measures what the peer has made us hold (lesson 03 watches it to time a frame out): it is bytes received, not the length announced',
    });
    pushOrFail(decoder, bytes.subarray(HEADER_BYTES + 10), 'the rest of the frame');
    check(held() === 0, 'bufferedBytes is not 0 once the frame is whole.', {
      observed: `bufferedBytes is ${held()} after the whole frame was decoded`,
      expected: '0: nothing held',
      idea: 'bufferedBytes counts what is held of an incomplete frame, and only that',
    });
  });

  test('a bad length is refused however its header is cut', () => {
    for (const [claimed, what] of [[512 * MiB, 'an oversize length'], [0, 'a length of 0']] as const) {
      const header = headerClaiming(claimed);
      for (let cut = 1; cut < HEADER_BYTES; cut++) {
        const decoder = new FrameDecoder();
        const allocations = watchAllocations();
        let outcome: ReturnType<typeof pushCatching>;
        try {
          pushOrFail(decoder, header.subarray(0, cut), `the first ${cut} byte(s) of a 4-byte header`);
          outcome = pushCatching(decoder, header.subarray(cut));
        } finally {
          allocations.restore();
        }
        check(outcome.error !== undefined && allocations.largest <= 2 * MAX_FRAME_BYTES, `${what[0]!.toUpperCase()}${what.slice(1)} got through when its header arrived in two pieces.`, {
          observed: `a header claiming ${claimed} bytes, cut ${cut} + ${HEADER_BYTES - cut}: push() ${outcome.error ? `threw ${outcome.error.name}` : `returned ${outcome.frames.length} frame(s) and threw nothing`}${allocations.largest > 0 ? `; the largest Buffer allocated was ${mib(allocations.largest)}` : ''}`,
          expected: 'the same refusal as for a header that arrives whole: a throw when the 4th byte is in, nothing allocated',
          idea: 'the length is checked wherever it is read: a peer chooses how its header is cut, so a check on one path only is no check',
        });
        if (claimed === 0) check(!/exceeds/i.test(outcome.error!.message), 'A length of 0 was refused with a false reason.', {
          observed: `push() threw ${outcome.error!.name}: ${outcome.error!.message}`,
          expected: 'a message that says what is wrong: a frame holds at least its type byte',
          idea: 'the refusal goes to the peer in an ERROR frame: it must say what was really wrong',
        });
      }
    }
  });

  test('a bad length after a good frame in the same chunk is refused at once', () => {
    for (const [claimed, what] of [[512 * MiB, 'an oversize length'], [0, 'a length of 0']] as const) {
      const decoder = new FrameDecoder();
      const chunk = Buffer.concat([encodeFrame(FrameType.DATA, 'a good frame first'), headerClaiming(claimed)]);
      const allocations = watchAllocations();
      let outcome: ReturnType<typeof pushCatching>;
      try {
        outcome = pushCatching(decoder, chunk);
      } finally {
        allocations.restore();
      }
      check(outcome.error !== undefined && allocations.largest <= 2 * MAX_FRAME_BYTES, `${what[0]!.toUpperCase()}${what.slice(1)} was not refused when it came second in a chunk.`, {
        observed: `one chunk holding a valid frame and then a header claiming ${claimed} bytes: push() ${outcome.error ? `threw ${outcome.error.name}` : `returned ${outcome.frames.length} frame(s) and threw nothing (bufferedBytes ${decoder.bufferedBytes})`}${allocations.largest > 0 ? `; the largest Buffer allocated was ${mib(allocations.largest)}` : ''}`,
        expected: 'a throw as soon as that header is read, with nothing allocated for it',
        idea: 'every header is checked, not just the one a chunk starts with: the peer decides where its frames fall in a packet',
      });
    }
  });

  test('decoders of different connections do not share state', () => {
    // Two connections whose headers both arrive in pieces, interleaved: lengths whose high
    // bytes differ, so mixing their header bytes gives each the wrong length.
    const big = encodeFrame(FrameType.DATA, Buffer.alloc(70_000, 0x61));
    const small = encodeFrame(FrameType.PING, 'small');
    for (let cut = 1; cut < HEADER_BYTES; cut++) {
      const a = new FrameDecoder();
      const b = new FrameDecoder();
      const got: { a: Frame[]; b: Frame[] } = { a: [], b: [] };
      const feed = (which: 'a' | 'b', chunk: Buffer) => {
        const outcome = pushCatching(which === 'a' ? a : b, chunk);
        check(!outcome.error, 'A decoder threw on well-formed input while another decoder was in use.', {
          observed: `with two decoders fed interleaved pieces of their headers (cut after byte ${cut}), decoder ${which} threw ${outcome.error?.name}: ${outcome.error?.message}`,
          expected: 'each decoder decodes its own stream whatever another one is doing',
          idea: 'decoder state (header bytes, frame, counts) belongs to one connection: nothing in it may be module-level or shared',
        });
        got[which].push(...outcome.frames);
      };
      feed('a', big.subarray(0, cut));
      feed('b', small.subarray(0, cut));
      feed('a', big.subarray(cut));
      feed('b', small.subarray(cut));
      const okA = got.a.length === 1 && got.a[0]!.type === FrameType.DATA && got.a[0]!.body.length === 70_000;
      const okB = got.b.length === 1 && got.b[0]!.type === FrameType.PING && got.b[0]!.body.toString() === 'small';
      check(okA && okB, 'Two decoders fed at the same time mixed up their streams.', {
        observed: `headers cut after byte ${cut}, pieces interleaved: decoder a gave ${got.a.length} frame(s)${got.a[0] ? ` (type ${got.a[0].type}, ${got.a[0].body.length} bytes)` : ''}, decoder b gave ${show(got.b)}; bufferedBytes a=${a.bufferedBytes}, b=${b.bufferedBytes}`,
        expected: 'a: one DATA frame of 70000 bytes; b: PING "small"',
        idea: 'decoder state (header bytes, frame, counts) belongs to one connection: nothing in it may be module-level or shared',
      });
    }
  });

  test('a decoder holds memory for what arrives, not for the maximum', () => {
    const allocations = watchAllocations();
    const before = process.memoryUsage().arrayBuffers;
    let grown: number;
    const decoders: FrameDecoder[] = [];
    try {
      for (let i = 0; i < 16; i++) {
        const decoder = new FrameDecoder();
        pushOrFail(decoder, encodeFrame(FrameType.DATA, 'a small frame'), 'a small frame');
        decoders.push(decoder);
      }
      grown = process.memoryUsage().arrayBuffers - before;
    } finally {
      allocations.restore();
    }
    check(allocations.total <= 64 * 1024 && grown < 8 * MiB, 'Each decoder reserves memory for the largest frame it could ever get.', {
      observed: `16 decoders, each fed one 18-byte frame, allocated ${mib(allocations.total)} through Buffer (largest ${mib(allocations.largest)}), and ArrayBuffer memory grew by ${mib(Math.max(0, grown))}`,
      expected: 'a few hundred bytes: a decoder allocates a frame when its length is known, sized to it',
      idea: 'memory per connection follows what the peer sends, not the protocol maximum: 1 MiB reserved per connection is 10 GiB for 10,000 idle ones',
    });
  });

  test('a handler that stops the reader gets no more frames from the same chunk', async () => {
    const { client, socket } = await connectedPair();
    const handed: Frame[] = [];
    // The first frame makes the handler give up on the connection (say, it failed to
    // authenticate): the frames that came with it must not be acted on.
    const reader = readFrames(socket, (frame) => {
      handed.push(frame);
      reader.stop();
    });
    let seen = 0;
    socket.on('data', (chunk: Buffer) => (seen += chunk.length));
    const three = encodeAll(sample());
    await client.write(three);
    await eventually(() => {
      check(seen >= three.length && handed.length > 0, 'The frames never reached the reader.', {
        observed: `${seen} of ${three.length} bytes arrived; onFrame called ${handed.length} time(s)`,
        expected: 'every byte we sent, and the first frame handed out',
        idea: 'a test precondition: the socket carries what we write',
      });
    }, { within: REPLY_MS });
    check(handed.length === 1 && reader.stopped, 'The reader went on handing out frames after the handler stopped it.', {
      observed: `three frames arrived in one chunk; the handler called stop() on the first, and onFrame was then called ${handed.length} time(s) in all (${show(handed)})`,
      expected: 'exactly one call: once stopped, nothing more reaches onFrame, not even frames of the chunk being handed out',
      idea: 'one chunk can hold several frames: check whether reading stopped before each one, not once per chunk',
    });
  });

  test('after a protocol error the reader hands out nothing more', async () => {
    // Our own listener, so the test decides what happens on a refusal: the stream is left
    // open (as a server with a send queue does while the ERROR goes out).
    const { client, socket } = await connectedPair();
    const handed: Frame[] = [];
    const refusals: string[] = [];
    readFrames(socket, (frame) => handed.push(frame), { onProtocolError: (reason) => refusals.push(reason) });
    // Added after readFrames' own listener, so it runs after it for each chunk.
    let seen = 0;
    socket.on('data', (chunk: Buffer) => (seen += chunk.length));
    const bad = Buffer.concat([headerClaiming(MAX_FRAME_BYTES + 1), encodeFrame(FrameType.DATA, 'after the bad header')]);
    await client.write(bad);
    await eventually(() => {
      check(refusals.length > 0 && seen >= bad.length, 'A header over the maximum was not refused.', {
        observed: `${REPLY_MS} ms after a header claiming ${MAX_FRAME_BYTES + 1} bytes, onProtocolError was called ${refusals.length} time(s)`,
        expected: 'one call to onProtocolError',
        idea: 'a length prefix is a claim by the peer: check it against the maximum',
      });
    }, { within: REPLY_MS });
    // A well-formed frame, then another bad header: a reader still feeding its decoder
    // would decode the one and refuse again on the other.
    const more = Buffer.concat([encodeFrame(FrameType.DATA, 'a later, well-formed frame'), headerClaiming(MAX_FRAME_BYTES + 1)]);
    await client.write(more);
    await eventually(() => {
      check(seen >= bad.length + more.length, 'The later bytes never reached the server.', {
        observed: `${seen} of ${bad.length + more.length} bytes arrived`,
        expected: 'every byte we sent',
        idea: 'a test precondition: the socket carries what we write',
      });
    }, { within: REPLY_MS });
    check(handed.length === 0 && refusals.length === 1, 'The reader went on decoding after the stream broke the protocol.', {
      observed: `after the refusal, onFrame got ${handed.length} frame(s) (${show(handed)}) and onProtocolError was called ${refusals.length} time(s)${refusals.length > 1 ? `: ${refusals.map((r) => JSON.stringify(r)).join(', ')}` : ''}`,
      expected: 'no frame and no second refusal: once framing is lost, the rest of the stream is ignored',
      idea: 'after a protocol error there is no telling where the next frame starts: stop reading, whatever the decoder would make of the rest',
    });
  });
});
