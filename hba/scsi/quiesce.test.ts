// LogicalUnit.quiesce(): the point-in-time hold behind engine snapshots.
import { describe, expect, it } from 'vitest';
import { Status } from './types.ts';
import { cdb10, makeUnit, pattern, run } from './testing.ts';

const WRITE10 = 0x2a;
const READ10 = 0x28;

describe('LogicalUnit.quiesce', () => {
  it('waits for commands in flight and holds new ones until released', async () => {
    const { lu, backend } = await makeUnit();
    // A write that is in flight when the hold starts: its backend call is slowed.
    const origWrite = backend.write.bind(backend);
    let slowWriteDone = false;
    backend.write = async (offset, data, fua) => {
      await new Promise((r) => setTimeout(r, 50));
      await origWrite(offset, data, fua);
      slowWriteDone = true;
    };
    const inFlight = run(lu, cdb10(WRITE10, 0, 1), { dataOut: pattern(1, 512, 1) });
    await new Promise((r) => setImmediate(r));
    const release = await lu.quiesce();
    expect(slowWriteDone).toBe(true); // the hold began only after the write finished
    expect((await inFlight).status).toBe(Status.GOOD);

    backend.write = origWrite;
    let heldDone = false;
    const held = run(lu, cdb10(WRITE10, 1, 1), { dataOut: pattern(1, 512, 2) }).then((r) => {
      heldDone = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 30));
    expect(heldDone).toBe(false); // waits, is not failed
    expect(lu.inFlight).toBe(0);
    release();
    expect((await held).status).toBe(Status.GOOD);
    const read = await run(lu, cdb10(READ10, 1, 1), { dataInCapacity: 512 });
    expect(read.dataIn).toEqual(pattern(1, 512, 2));
  });

  it('serializes two holds and tolerates a double release', async () => {
    const { lu } = await makeUnit();
    const first = await lu.quiesce();
    let secondHeld = false;
    const second = lu.quiesce().then((r) => {
      secondHeld = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 20));
    expect(secondHeld).toBe(false);
    first();
    first();
    const releaseSecond = await second;
    releaseSecond();
    expect((await run(lu, [0x00, 0, 0, 0, 0, 0])).status).toBe(Status.GOOD);
  });
});
