// Lesson 01: every socket, timer and listener a connection makes is released on every
// path the connection can end by: a clean goodbye, a reset, a kick by the server.
import { describe, test } from 'vitest';
import { startPresenceServer } from '#target/01-close-leaks/presence.ts';
import type net from 'node:net';
import { check, describeLeaks, eventually, isClean, LeakProbe, settleWithin, useHarness, type ConnectOptions, type TestClient } from '../runtime/harness/index.ts';

const h = useHarness('01');
const TICK_MS = 50;
// Cleanup runs in a 'close' handler, within a turn of the event loop of the close the
// test has just seen. 100 ms is ample, even on a loaded machine.
const CLEANUP_MS = 100;

async function start() {
  return h.track(await startPresenceServer({ tickMs: TICK_MS }));
}

/** Connects a client and waits for its welcome line; returns the client and its id. */
async function join(port: number, options?: ConnectOptions) {
  const client = await h.connect(port, options);
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
  // Compared with the count before the client joined, not with 0: one shared listener
  // that fans out over the registry is a fine design too.
  check(leaks.listeners.length === 0, `A client that ${path} is still listening for announcements.`, {
    observed: `after every client left, ${leaks.listeners.join(', ')} beyond those before it joined`,
    expected: 'as many as before the client joined: each connection removes the listener it added',
    idea: 'a listener on a long-lived emitter keeps its connection alive in memory for as long as the emitter lives',
  });
  check(isClean(leaks), `Something a client that ${path} made is still alive.`, {
    observed: `still alive beyond the running server: ${describeLeaks(leaks)}`,
    expected: 'nothing beyond the listening server',
    idea: 'every resource a connection opens is released when it closes',
  });
}

/** The registry holds exactly the clients still connected, each id mapped to its own connection. */
async function expectRegistry(server: Presence, live: Set<{ client: TestClient; id: number }>, after: string) {
  const ownedBy = (s: net.Socket | undefined, c: TestClient) => s?.remotePort === c.socket.localPort;
  await eventually(() => {
    const ids = [...live].map((j) => j.id);
    const shared = ids.filter((id, i) => ids.indexOf(id) !== i);
    const wrong = [...live].filter((j) => !ownedBy(server.clients.get(j.id), j.client)).map((j) => j.id);
    check(server.clients.size === live.size && shared.length === 0 && wrong.length === 0, `After ${after}, the registry does not match the clients connected.`, {
      observed: `${live.size} client(s) connected with ids [${ids.join(', ')}]; the registry holds ${server.clients.size} entr(ies) with ids [${[...server.clients.keys()].join(', ')}]${shared.length ? `; ids given to two live clients: ${shared.join(', ')}` : ''}${wrong.length ? `; ids whose entry is missing or another client's connection: ${wrong.join(', ')}` : ''}`,
      expected: 'one entry per connected client, under the id it was welcomed with, removed when (and only when) that connection closes',
      idea: "an id names one connection for its whole life: never reuse a live one, and a connection's cleanup deletes its own entry only",
    });
  }, { within: CLEANUP_MS });
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
    // Twice: a subscription has to last as long as the connection, not one event.
    for (const text of ['maintenance at noon', 'maintenance done']) {
      server.announce(text);
      for (const { client, id } of clients) {
        await eventually(() => {
          check(client.lines().includes(`announce ${text}`), `Client ${id} missed an announcement.`, {
            observed: `lines: ${JSON.stringify(client.lines())}`,
            expected: `"announce ${text}" (every announcement, for as long as the client is connected)`,
            idea: "every connection listens on the server-wide emitter until it closes: on(), not once(), and off() in 'close'",
          });
        }, { within: 1000 });
      }
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
    const stopped = await settleWithin(server.stop(), 1000);
    check(stopped.done, 'stop() never finished.', {
      observed: `stop() still pending 1000 ms after it was called, with ${clients.filter(({ client }) => !client.closed).length} of 2 connected clients still open`,
      expected: 'stop() asks every connection to go and resolves once the server has closed',
      idea: 'server.close() only stops accepting: it waits for every open connection, so stop() has to end them itself',
    });
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
    const before = server.announcements.listenerCount('announce');
    const { client, id } = await join(server.port);
    server.kick(id, 'spam');
    await client.waitClosed('kick() disconnects the client at once');
    await eventually(() => {
      const left = server.announcements.listenerCount('announce');
      check(left <= before, "A kicked client's announcement listener is still attached.", {
        observed: `${left} 'announce' listener(s) on the server-wide emitter after the only client was kicked (${before} before it joined)`,
        expected: `${before}, as before it joined: the connection removes the listener it added`,
        idea: "a listener on a long-lived emitter pins its connection in memory; remove it in 'close'",
      });
    }, { within: CLEANUP_MS });
  });

  test('a client that resets does not crash the server', async () => {
    const server = await start();
    const rude = await join(server.port);
    const polite = await join(server.port);
    const listening = server.announcements.listenerCount('announce');
    rude.client.reset();
    await rude.client.waitClosed('our own reset closes the connection');
    server.announce('still here');
    // eventually() fails at once with the crash probe's explanation if the server threw.
    await eventually(() => {
      const left = server.announcements.listenerCount('announce');
      check(polite.client.lines().includes('announce still here'), 'The other client stopped hearing from the server.', {
        observed: `after another client reset its connection, this one received ${JSON.stringify(polite.client.lines())}; 'announce' listeners went from ${listening} to ${left}`,
        expected: '"announce still here": one client resetting changes nothing for the others',
        idea: left < listening - 1
          ? "the leaving client removed other clients' listeners too: off() exactly the function you added, never removeAllListeners()"
          : "a reset reaches the server as an 'error' event on that one socket, which must be handled there",
      });
    }, { within: 1000 });
  });

  test('a client leaving does not silence the others', async () => {
    const server = await start();
    const leaving = await join(server.port);
    const staying = await join(server.port);
    const listening = server.announcements.listenerCount('announce');
    leaving.client.end();
    await leaving.client.waitClosed('the server closes its side after our FIN');
    server.announce('who is left?');
    await eventually(() => {
      const left = server.announcements.listenerCount('announce');
      check(staying.client.lines().includes('announce who is left?'), 'After one client left, another stopped hearing announcements.', {
        observed: `the client still connected received ${JSON.stringify(staying.client.lines())}; 'announce' listeners went from ${listening} to ${left} when one client left`,
        expected: `"announce who is left?", and ${listening - 1} or more listeners: a leaving client removes its own listener and nobody else's`,
        idea: 'off() exactly the function this connection added; removeAllListeners() unsubscribes every other client too',
      });
    }, { within: 1000 });
  });

  test('a kicked client that never closes its side is disconnected anyway', async () => {
    // A tick long enough never to fire here: a tick that writes after end() errors the
    // socket and destroys it by accident, which would hide an end() in kick().
    const server = h.track(await startPresenceServer({ tickMs: 60_000 }));
    const probe = new LeakProbe().watchListeners(server.announcements, 'announce', 'the announcements emitter');
    // allowHalfOpen: our side stays open after the server's FIN, like a peer that is
    // misbehaving, frozen, or gone without a word. end() waits for such a peer for ever.
    const { client, id } = await join(server.port, { allowHalfOpen: true });
    const serverSide = server.clients.get(id);
    server.kick(id, 'spam');
    await eventually(() => {
      check(client.ended || client.closed, 'kick() did not disconnect the client.', {
        observed: `${CLEANUP_MS} ms after kick(), the client had seen neither FIN nor a close`,
        expected: 'the connection closed at once',
        idea: 'kick() closes the connection itself, without waiting for the client',
      });
    }, { within: CLEANUP_MS });
    await eventually(() => {
      check(serverSide === undefined || serverSide.destroyed, "kick() half-closed the connection and left the server's socket open.", {
        observed: `${CLEANUP_MS} ms after kick(), the client saw our FIN but the server's socket is still open (writableEnded=${serverSide?.writableEnded}, destroyed=${serverSide?.destroyed}) because this client never sent its own FIN; the registry holds ${server.clients.size} client(s)`,
        expected: "the server's socket destroyed right away, whatever the peer does",
        idea: "end() only sends FIN and waits for the peer to close its side, which a misbehaving peer never does; destroy() closes now (and 'close' then runs the cleanup)",
      });
    }, { within: CLEANUP_MS });
    client.destroy(); // our own half-open socket is not the server's leak
    await client.waitClosed('our own destroy() closes our side');
    await expectForgotten(server, probe, 'was kicked and never answered our FIN');
  });

  test('a kicked client that stopped reading is disconnected anyway', async () => {
    // Clients get kicked for misbehaving, and one that stopped reading is the usual case:
    // its receive window is full and the server's writes queue up in user space.
    const server = await start();
    const accepted = h.watchAccepted();
    const { client, id } = await join(server.port);
    client.socket.pause();
    const serverSide = await eventually(() => {
      const side = accepted.of(client.port);
      check(side !== undefined, 'The test could not find the server side of its connection.', {
        observed: `${accepted.sockets.length} connection(s) accepted, none from port ${client.port}`,
        expected: "the server's socket of this client, seen through the net.server.socket channel",
        idea: 'a test precondition: the harness sees every accepted connection',
      });
      return side!;
    }, { within: 1000 });
    // Announce until the kernel's buffers are full and the server holds unsent bytes (bounded).
    for (let i = 0; i < 64 && serverSide.socket.writableLength === 0 && !serverSide.destroyed; i++) {
      server.announce('x'.repeat(256 * 1024));
      await new Promise((resolve) => setImmediate(resolve));
    }
    check(serverSide.socket.writableLength > 0, 'The test could not fill the buffers of a client that does not read.', {
      observed: `after 64 announcements of 256 KiB, the server holds ${serverSide.socket.writableLength} unsent bytes for this client`,
      expected: 'unsent bytes queued on the server side: the client stopped reading',
      idea: 'a test precondition: a peer that does not read stops the server\'s writes from completing',
    });
    const pending = serverSide.socket.writableLength;
    server.kick(id, 'not reading');
    await eventually(() => {
      check(serverSide.destroyed, "kick() did not disconnect a client that stopped reading.", {
        observed: `${CLEANUP_MS} ms after kick(), the server's socket is still open (writableEnded=${serverSide.ended}, ${serverSide.socket.writableLength} bytes still waiting to be sent, ${pending} when kick() was called); the registry holds ${server.clients.size} client(s)`,
        expected: "the server's socket destroyed at once, with whatever was still queued for it",
        idea: "a kick must not wait on the peer: a write callback or end() completes only once the peer reads what is queued, which this one never will; destroy() closes now (and 'close' runs the cleanup)",
      });
    }, { within: CLEANUP_MS });
    client.destroy();
    await client.waitClosed('our own destroy() closes our side');
  });

  test('clients coming and going by every path: the registry holds exactly the live ones', async () => {
    const server = await start();
    const probe = new LeakProbe().watchListeners(server.announcements, 'announce', 'the announcements emitter');
    type Joined = Awaited<ReturnType<typeof join>>;
    const live = new Set<Joined>();
    const enter = async () => {
      const j = await join(server.port);
      live.add(j);
      return j;
    };
    const leave = async (j: Joined, how: string, go: (c: TestClient) => void) => {
      go(j.client);
      live.delete(j);
      await j.client.waitClosed(`the connection closes after the client ${how}`);
      await expectRegistry(server, live, `a client ${how}`);
    };
    const a = await enter();
    const b = await enter();
    const c = await enter();
    await leave(a, 'said goodbye', (cl) => cl.end());
    const d = await enter();
    await expectRegistry(server, live, 'a new client joined after another had left');
    await leave(b, 'reset', (cl) => cl.reset());
    await leave(c, 'was kicked', () => server.kick(c.id, 'spam'));
    check(!d.client.closed, 'kick() disconnected the wrong client.', {
      observed: `kick(${c.id}) closed client ${c.id}, and also client ${d.id}, which nobody kicked`,
      expected: `only client ${c.id} disconnected`,
      idea: 'the registry maps each id to its own connection for as long as it is open',
    });
    // The count each client hears follows the same paths: one client is left.
    await eventually(() => {
      const counts = d.client.lines().filter((l) => l.startsWith('online '));
      check(counts.at(-1) === 'online 1', 'The online count does not follow clients that were kicked or reset.', {
        observed: `after one client said goodbye, one reset and one was kicked, the last one still connected hears ${JSON.stringify(counts.at(-1))} (the registry holds ${server.clients.size})`,
        expected: '"online 1" within a few ticks',
        idea: "whatever counts connections is updated on the path every connection ends by, 'close', not on 'end' alone",
      });
    }, { within: 1000 });
    await leave(d, 'said goodbye', (cl) => cl.end());
    await expectForgotten(server, probe, 'left among others');
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
