// Everything a lesson's tests use, from one import.
export { useHarness, type Harness, type Stoppable } from './scope.ts';
export { connect, TestClient, type ConnectOptions } from './client.ts';
export { eventually, gate, ioTurn, waitUntil } from './eventually.ts';
export { settleWithin, watchPromise, type Settled, type Watched } from './settle.ts';
export { check, fail, LessonFailure, type Lesson } from './teach.ts';
export { LeakProbe, describeLeaks, isClean, socketFdCount } from '../probes/leaks.ts';
export { takeCrash } from '../probes/crash.ts';
export { watchAccepted, type AcceptedSocket, type AcceptedWatch } from '../probes/accepted.ts';
export * from '../protocol.ts';
export { createRandom, startFaultProxy, withTimeline, type FaultProxy, type FaultSpec, type Fault } from '../faults/proxy.ts';
export { entryUnderTest, spawnEntry, type ChildExit, type EntryProcess } from './child.ts';
