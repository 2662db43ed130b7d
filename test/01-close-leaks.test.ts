// Lesson 01: every socket, timer and listener a connection makes is released on every
// path the connection can end by: a clean goodbye, a reset, a kick by the server.
import { describe, test } from 'vitest';
import { startPresenceServer } from '#target/01-close-leaks/presence.ts';
import { check, describeLeaks, eventually, isClean, LeakProbe, useHarness } from '../runtime/harness/index.ts';

const h = useHarness('01');
const TICK_MS = 50;
// Cleanup runs in a 'close' handler, within a turn of the event loop of the close the
// test has just seen. 100 ms is ample, even on a loaded machine.
const CLEANUP_MS = 100;

async function start() {
  return h.track(await startPresenceServer({ tickMs: TICK_MS }));
}

/** Connects a client and waits for its welcome line; returns the client and its id. */
async function join(port: number) {
  const client = await h.connect(port);
  await eventually(() => {
    check(client.lines().some((l) => l.startsWith('welcome ')), 'A new client was not welcomed.', {
      observed: `after connecting, the client received ${JSON.stringify(client.received.toString())}`,
      expected: 'a first line "welcome <id>"',
      idea: 'the server greets every client as soon as it connects',
    });
  }, { within: 1000 });
  const id = Number(client.lines().find((l) => l.startsWith('welcome '))!.split(' ')[1]);
  return { client, id };
}

type Presence = Awaited<ReturnType<typeof start>>;

/** After a connection ended by `path`, its registry entry, timer and listener must be gone. */
async function expectForgotten(server: Presence, probe: LeakProbe, path: string) {
  await eventually(() => {
    check(server.clients.size === 0, `The registry still holds a client that ${path}.`, {
      observed: `${server.clients.size} client(s) in the registry ${CLEANUP_MS} ms after the connection ended`,
      expected: '0: a connection removes itself from the registry when it ends, however it ends',
      idea: "cleanup that runs on 'end' runs only when the peer says goodbye; 'close' fires exactly once on every path",
    });
  }, { within: CLEANUP_MS });
  const leaks = await probe.settle(CLEANUP_MS);
  check(!leaks.resources.has('Timeout'), `The per-connection ticker of a client that ${path} is still running.`, {
    observed: `${CLEANUP_MS} ms after the connection ended, still alive beyond the running server: ${describeLeaks(leaks)}`,
    expected: "no timer left: the connection's setInterval is cleared when the connection closes",
    idea: "an interval holds its callback, and the callback holds the socket: clear it in the one 'close' handler",
  });
  check(server.announcements.listenerCount('announce') === 0, `A client that ${path} is still listening for announcements.`, {
    observed: `${server.announcements.listenerCount('announce')} 'announce' listener(s) on the server-wide emitter after every client left`,
    expected: '0: each connection removes the listener it added',
    idea: 'a listener on a long-lived emitter keeps its connection alive in memory for as long as the emitter lives',
  });
  check(isClean(leaks), `Something a client that ${path} made is still alive.`, {
    observed: `still alive beyond the running server: ${describeLeaks(leaks)}`,
    expected: 'nothing beyond the listening server',
    idea: 'every resource a connection opens is released when it closes',
  });
}

describe('baseline: the presence server works', () => {
  test('a new client is welcomed with its id', async () => {
    const server = await start();
    const first = await join(server.port);
    const second = await join(server.port);
    check(first.id !== second.id, 'Two clients got the same id.', {
      observed: `ids ${first.id} and ${second.id}`,
      expected: 'a different id for each connection',
      idea: 'the registry is keyed by id',
    });
  });

  test('every client hears the online count each tick', async () => {
    const server = await start();
    const { client } = await join(server.port);
    await join(server.port);
    await eventually(() => {
      check(client.lines().includes('online 2'), 'The online count never arrived.', {
        observed: `lines so far: ${JSON.stringify(client.lines())}`,
        expected: `"online 2" within a few ticks of ${TICK_MS} ms`,
        idea: 'each connection has its own ticker',
      });
    }, { within: 1000 });
  });

  test('an announcement reaches every client', async () => {
    const server = await start();
    const clients = [await join(server.port), await join(server.port), await join(server.port)];
    server.announce('maintenance at noon');
    for (const { client, id } of clients) {
      await eventually(() => {
        check(client.lines().includes('announce maintenance at noon'), `Client ${id} missed the announcement.`, {
          observed: `lines: ${JSON.stringify(client.lines())}`,
          expected: '"announce maintenance at noon"',
          idea: 'every connection listens on the server-wide emitter',
        });
      }, { within: 1000 });
    }
  });

  test('a client that ends cleanly is forgotten', async () => {
    const server = await start();
    const probe = new LeakProbe().watchListeners(server.announcements, 'announce', 'the announcements emitter');
    const { client } = await join(server.port);
    client.end();
    await client.waitClosed('the server closes its side after our FIN');
    await expectForgotten(server, probe, 'said goodbye');
  });

  test('stop() closes every connection and releases everything', async () => {
    const server = await startPresenceServer({ tickMs: TICK_MS });
    const clients = [await join(server.port), await join(server.port)];
    await server.stop();
    for (const { client } of clients) await client.waitClosed('stop() ends every connection');
    const leaks = await h.probe.settle(CLEANUP_MS);
    check(leaks.resources.size === 0, 'stop() left something running.', {
      observed: `after stop() resolved: ${describeLeaks(leaks)}`,
      expected: 'nothing: no listener, no socket, no timer',
      idea: 'a stopped server has released everything it opened',
    });
  });
});

describe('every path releases everything', () => {
  test('a kicked client leaves the registry', async () => {
    const server = await start();
    const { client, id } = await join(server.port);
    server.kick(id, 'spam');
    await client.waitClosed('kick() disconnects the client at once');
    await eventually(() => {
      check(server.clients.size === 0, 'The registry still holds a client the server kicked.', {
        observed: `${server.clients.size} client(s) in the registry ${CLEANUP_MS} ms after kick() destroyed the only connection`,
        expected: '0: the connection is gone, so is its entry',
        idea: "a socket the server destroys never emits 'end' (only a peer's FIN does); 'close' fires on every path",
      });
    }, { within: CLEANUP_MS });
  });

  test("a kicked client's ticker stops", async () => {
    const server = await start();
    const probe = new LeakProbe().watchListeners(server.announcements, 'announce', 'the announcements emitter');
    const { client, id } = await join(server.port);
    server.kick(id, 'spam');
    await client.waitClosed('kick() disconnects the client at once');
    const leaks = await probe.settle(CLEANUP_MS);
    check(!leaks.resources.has('Timeout'), "A kicked client's ticker is still running.", {
      observed: `${CLEANUP_MS} ms after kick(), still alive beyond the running server: ${describeLeaks(leaks)}`,
      expected: "no timer: the connection's interval is cleared when it closes, however it closes",
      idea: "a setInterval runs until someone clears it; clear it in 'close', not 'end'",
    });
  });

  test("a kicked client's announcement listener is removed", async () => {
    const server = await start();
    const { client, id } = await join(server.port);
    server.kick(id, 'spam');
    await client.waitClosed('kick() disconnects the client at once');
    await eventually(() => {
      const left = server.announcements.listenerCount('announce');
      check(left === 0, "A kicked client's announcement listener is still attached.", {
        observed: `${left} 'announce' listener(s) on the server-wide emitter after the only client was kicked`,
        expected: '0: the connection removes the listener it added',
        idea: "a listener on a long-lived emitter pins its connection in memory; remove it in 'close'",
      });
    }, { within: CLEANUP_MS });
  });

  test('a client that resets does not crash the server', async () => {
    const server = await start();
    const rude = await join(server.port);
    const polite = await join(server.port);
    rude.client.reset();
    await rude.client.waitClosed('our own reset closes the connection');
    server.announce('still here');
    // eventually() fails at once with the crash probe's explanation if the server threw.
    await eventually(() => {
      check(polite.client.lines().includes('announce still here'), 'The other client stopped hearing from the server.', {
        observed: `after another client reset its connection, this one received ${JSON.stringify(polite.client.lines())}`,
        expected: '"announce still here": one client resetting changes nothing for the others',
        idea: "a reset reaches the server as an 'error' event on that one socket, which must be handled there",
      });
    }, { within: 1000 });
  });

  test('a client that resets is forgotten', async () => {
    const server = await start();
    const probe = new LeakProbe().watchListeners(server.announcements, 'announce', 'the announcements emitter');
    const { client } = await join(server.port);
    client.reset();
    await client.waitClosed('our own reset closes the connection');
    await expectForgotten(server, probe, 'reset its connection');
  });
});
