// The harness checks itself: the probes must see what they claim to see, and stay quiet
// when there is nothing to see.
import { describe, expect, test } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import {
  check, connect, describeLeaks, encode, eventually, FrameType, gate, isClean, LeakProbe, LessonFailure, ReferenceDecoder, settleWithin, useHarness, watchPromise,
} from '../../runtime/harness/index.ts';

const h = useHarness('runtime');

async function listen(handler: (s: net.Socket) => void = () => {}) {
  const server = net.createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  h.defer(() => new Promise<void>((r) => server.close(() => r())));
  return { server, port: (server.address() as net.AddressInfo).port };
}

describe('teaching failures', () => {
  test('a LessonFailure says observed, expected, idea and where the hint is', () => {
    const err = new LessonFailure('Summary.', { observed: 'o', expected: 'e', idea: 'i' });
    expect(err.name).toBe('LessonFailure');
    expect(err.message).toMatch(/^Summary\.\n {2}observed: o\n {2}expected: e\n {2}idea: {5}i\n {2}stuck\? {4}npm run hint runtime/);
  });

  test('check passes quietly and fails with a LessonFailure', () => {
    expect(() => check(true, 's', { observed: '', expected: '', idea: '' })).not.toThrow();
    expect(() => check(false, 's', { observed: '', expected: '', idea: '' })).toThrow(LessonFailure);
  });
});

describe('eventually and gate', () => {
  test('eventually returns once the probe holds', async () => {
    let calls = 0;
    const value = await eventually(() => {
      calls++;
      if (calls < 3) throw new Error('not yet');
      return 'done';
    }, { within: 1000, every: 1 });
    expect(value).toBe('done');
    expect(calls).toBe(3);
  });

  test("eventually rethrows the probe's last error after `within`", async () => {
    const t0 = performance.now();
    await expect(eventually(() => { throw new Error('still wrong'); }, { within: 50 })).rejects.toThrow('still wrong');
    expect(performance.now() - t0).toBeGreaterThanOrEqual(48);
  });

  test('a gate holds until opened', async () => {
    const g = gate<number>();
    const order: string[] = [];
    const waiter = g.opened.then((v) => order.push(`opened ${v}`));
    order.push('before');
    g.open(7);
    await waiter;
    expect(order).toEqual(['before', 'opened 7']);
  });
});

describe('settleWithin and watchPromise', () => {
  test('settleWithin says how a promise settled, or that it had not', async () => {
    expect(await settleWithin(Promise.resolve(7), 100)).toEqual({ done: true, value: 7 });
    const failed = await settleWithin(Promise.reject(new Error('no')), 100);
    expect('error' in failed && (failed.error as Error).message).toBe('no');
    expect(await settleWithin(new Promise(() => {}), 20)).toEqual({ done: false });
  });

  test('watchPromise follows a promise without awaiting it', async () => {
    const g = gate<string>();
    const watched = watchPromise(g.opened);
    expect(watched.state).toBe('pending');
    g.open('ok');
    await g.opened;
    expect([watched.state, watched.value]).toEqual(['resolved', 'ok']);
    const rejected = watchPromise(Promise.reject(new Error('late')));
    await eventually(() => expect(rejected.state).toBe('rejected'), { within: 100 });
  });
});

describe('watchPromise started by a function', () => {
  test('the clock starts before the operation does', async () => {
    let armedAt = 0;
    const watched = watchPromise(() => {
      armedAt = performance.now();
      return new Promise<void>((resolve) => setTimeout(resolve, 30));
    });
    const startedBefore = performance.now() - armedAt;
    await eventually(() => expect(watched.settled).toBe(true), { within: 1000 });
    // Whatever happened between arming and returning is inside afterMs, never outside it.
    expect(watched.afterMs!).toBeGreaterThanOrEqual(30 - 1);
    expect(startedBefore).toBeGreaterThanOrEqual(0);
  });
});

describe('leak probe', () => {
  test('sees a timer, and where it was created', () => {
    const probe = new LeakProbe();
    const timer = setInterval(() => {}, 1000);
    const leaks = probe.leaks();
    clearInterval(timer);
    expect(leaks.resources.get('Timeout')).toBe(1);
    expect(describeLeaks(leaks)).toContain('harness.test.ts');
    expect(isClean(probe.leaks())).toBe(true);
  });

  test("counts an unref'd timer that is still scheduled, but not as ref'd", () => {
    const probe = new LeakProbe();
    const timer = setTimeout(() => {}, 1000).unref();
    const leaks = probe.leaks();
    clearTimeout(timer);
    expect(leaks.resources.get('Timeout')).toBe(1);
    expect(leaks.refTimers).toBe(0);
    expect(describeLeaks(leaks)).toContain('harness.test.ts');
  });

  test('ignores the timer behind AbortSignal.timeout(), which nobody can clear', () => {
    const probe = new LeakProbe();
    const signal = AbortSignal.timeout(1000);
    expect(isClean(probe.leaks())).toBe(true);
    expect(signal.aborted).toBe(false);
  });

  test('sees a server and both ends of a connection until they close', async () => {
    const probe = new LeakProbe();
    const { port, server } = await listen();
    const client = net.connect(port, '127.0.0.1');
    await once(server, 'connection');
    const open = probe.leaks();
    expect(open.resources.get('TCPServerWrap')).toBe(1);
    expect(open.resources.get('TCPSocketWrap')).toBe(2);
    expect(open.socketFds).toBeGreaterThanOrEqual(3);
    client.destroy();
    await new Promise<void>((r) => server.close(() => r()));
    expect(isClean(await probe.settle(500))).toBe(true);
  });
});

describe('leak probe, watched emitters and servers', () => {
  test('counts listeners added to a watched emitter', async () => {
    const { EventEmitter } = await import('node:events');
    const bus = new EventEmitter();
    const probe = new LeakProbe().watchListeners(bus, 'news', 'the bus');
    const listener = () => {};
    bus.on('news', listener);
    expect(describeLeaks(probe.leaks())).toContain("1 'news' listener(s) on the bus");
    bus.off('news', listener);
    expect(isClean(probe.leaks())).toBe(true);
  });

  test('counts the connections a watched server has not closed', async () => {
    const { port, server } = await listen((s) => s.on('error', () => {}));
    const probe = new LeakProbe().watchServer(server);
    const client = await h.connect(port);
    await eventually(() => expect(probe.leaks().connections).toBe(1), { within: 1000 });
    client.destroy();
    await eventually(() => expect(probe.leaks().connections).toBe(0), { within: 1000 });
  });
});

describe('accepted sockets', () => {
  test("tells a server side that was destroyed from one that was only ended", async () => {
    const accepted = h.watchAccepted();
    const { port } = await listen((s) => s.on('error', () => {}));
    const ended = await h.connect(port, { allowHalfOpen: true });
    const destroyed = await h.connect(port, { allowHalfOpen: true });
    await eventually(() => expect(accepted.sockets.length).toBe(2), { within: 1000 });
    accepted.of(ended.port)!.socket.end();
    accepted.of(destroyed.port)!.socket.destroy();
    await eventually(() => expect(accepted.of(destroyed.port)!.closedAt).toBeDefined(), { within: 1000 });
    // The half-open peer never answers the FIN, so the ended side stays open for ever.
    await eventually(() => expect(ended.ended).toBe(true), { within: 1000 });
    expect(accepted.of(ended.port)).toMatchObject({ ended: true, destroyed: false, closedAt: undefined });
    expect(accepted.of(destroyed.port)).toMatchObject({ destroyed: true });
    expect(accepted.of(12345)).toBeUndefined();
  });
});

describe('crash probe', () => {
  test("captures an 'error' event nobody listens to, as a LessonFailure", async () => {
    const { port } = await listen(); // the server's sockets have no 'error' listener
    const client = await connect(port);
    await eventually(() => expect(client.socket.remotePort).toBe(port), { within: 200 });
    await new Promise((r) => setTimeout(r, 20)); // let the server accept before we reset
    client.reset();
    // eventually() checks the crash probe on every poll and fails at once with the crash.
    const t0 = performance.now();
    const crash = await eventually(() => { throw new Error('waiting'); }, { within: 5000 }).catch((err: unknown) => err as Error);
    expect(performance.now() - t0).toBeLessThan(4000);
    expect(crash).toBeInstanceOf(LessonFailure);
    expect(crash.message).toContain('ECONNRESET');
    expect(crash.message).toContain("'error' listener");
  });
});

describe('crash probe, rejections', () => {
  test('captures a rejected promise nobody handles, as a LessonFailure', async () => {
    void Promise.reject(new Error('nobody caught me'));
    const failure = await eventually(() => { throw new Error('waiting'); }, { within: 5000 }).catch((err: unknown) => err as Error);
    expect(failure).toBeInstanceOf(LessonFailure);
    expect(failure.message).toContain('nobody caught me');
    expect(failure.message).toContain('unhandled rejection');
  });
});

describe('test client', () => {
  test('records frames, lines and how the connection closed', async () => {
    const { port } = await listen((s) => {
      s.on('error', () => {});
      s.write(Buffer.concat([encode(FrameType.DATA, 'a'), encode(FrameType.PING)]));
      s.end();
    });
    const client = await h.connect(port);
    const frames = await client.waitForFrames(2, 'two frames');
    expect(frames.map((f) => f.type)).toEqual([FrameType.DATA, FrameType.PING]);
    expect(await client.waitClosed('the server ends')).toBe('fin');
  });

  test('a reset is reported as a reset', async () => {
    const { port } = await listen((s) => s.once('data', () => s.resetAndDestroy()));
    const client = await h.connect(port);
    await client.write('hello');
    expect(await client.waitClosed('the server resets')).toBe('reset');
  });

  test('waitForFrames fails with what did arrive', async () => {
    const { port } = await listen((s) => {
      s.on('error', () => {});
      s.write(encode(FrameType.PONG, 'x'));
    });
    const client = await h.connect(port);
    await expect(client.waitForFrames(2, 'two replies', 100)).rejects.toThrow(/1 of 2 frame\(s\) arrived: PONG "x"/);
  });
});

describe('reference decoder', () => {
  test('refuses a length over the maximum before waiting for it', () => {
    const header = Buffer.alloc(4);
    header.writeUInt32BE(2 ** 31);
    expect(() => new ReferenceDecoder().push(header)).toThrow(/outside 1\.\./);
  });
});
