// End-to-end tests of the native VirtioDevice driven by the mock virtio
// driver: chains out, completions back, notifications (virtio 1.2 §2.7).
import { afterEach, describe, expect, it } from 'vitest';
import { native } from './index.ts';
import { MockSplitQueue, duplicateFds } from '../virtio/mock-driver.ts';
import { VHOST_USER_F_PROTOCOL_FEATURES, VirtioFeature } from '../virtio/ring-layout.ts';
import { type Rig, createRecordingDevice, settle, setupRig, waitFor } from './device-harness.ts';

let rig: Rig | undefined;
afterEach(() => {
  rig?.close();
  rig = undefined;
});

describe('VirtioDevice: normal chains', () => {
  it('pops a direct chain, copies readable bytes and completes into writable buffers', async () => {
    rig = await setupRig();
    const { queue, device } = rig;
    const head = queue.addChain([{ data: Buffer.from('request-header') }, { data: Buffer.from('+cdb') }, { writableLength: 32 }]);
    queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 1, 3000, 'chain');
    const chain = rig.chains[0]!;
    expect(chain).toMatchObject({ queue: 0, head, writableLength: 32 });
    expect(chain.readable.toString()).toBe('request-header+cdb');
    expect(device.queueState(0)).toMatchObject({ started: true, size: 16, lastAvail: 1, inFlight: 1 });

    device.complete(0, head, Buffer.from('response'));
    expect(await queue.waitForCall(2000)).toBe(true);
    const used = queue.reclaim();
    expect(used).toEqual([{ head, len: 8, data: Buffer.from('response') }]);
    expect(device.queueState(0)).toMatchObject({ usedIdx: 1, inFlight: 0 });
  });

  it('spreads completion data over several writable segments in order', async () => {
    rig = await setupRig();
    const { queue, device } = rig;
    const head = queue.addChain([
      { data: Buffer.from([1]) },
      { writableLength: 3 },
      { writableLength: 2 },
      { writableLength: 10 },
    ]);
    queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 1);
    expect(rig.chains[0]!.writableLength).toBe(15);
    device.complete(0, head, Buffer.from('abcdefg'));
    expect(queue.writtenData(head, 7).toString()).toBe('abcdefg');
    const [used] = queue.reclaim();
    expect(used).toMatchObject({ head, len: 7 });
    expect(used!.data.toString()).toBe('abcdefg');
  });

  it('walks indirect tables with many segments', async () => {
    rig = await setupRig();
    const { queue, device } = rig;
    const readable = Array.from({ length: 20 }, (_, i) => ({ data: Buffer.from([i, i, i]) }));
    const head = queue.addChain([...readable, { writableLength: 4 }, { writableLength: 4 }], { indirect: true });
    queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 1);
    const chain = rig.chains[0]!;
    expect(chain.readable).toEqual(Buffer.concat(readable.map((s) => s.data)));
    expect(chain.writableLength).toBe(8);
    device.complete(0, head, Buffer.from('12345678'));
    expect(queue.reclaim()[0]!.data.toString()).toBe('12345678');
  });

  it('hands all chains of one wake-up to JS in one batch', async () => {
    rig = await setupRig();
    const { queue } = rig;
    const heads = [0, 1, 2, 3, 4].map((i) => queue.addChain([{ data: Buffer.from([i]) }, { writableLength: 1 }]));
    queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 5);
    expect(rig.batches.length).toBe(1);
    expect(rig.chains.map((c) => c.head)).toEqual(heads);
    expect(rig.chains.map((c) => c.readable[0])).toEqual([0, 1, 2, 3, 4]);
  });

  it('keeps going across avail index wrap-around and descriptor reuse', async () => {
    rig = await setupRig({ queueSize: 4 });
    const { queue, device } = rig;
    for (let round = 0; round < 40; round++) {
      const head = queue.addChain([{ data: Buffer.from([round]) }, { writableLength: 1 }]);
      queue.publishAndKick();
      await waitFor(() => rig!.chains.length === round + 1);
      device.complete(0, head, Buffer.from([round ^ 0xff]));
      expect(queue.reclaim()).toEqual([{ head, len: 1, data: Buffer.from([round ^ 0xff]) }]);
    }
    expect(rig.errors).toEqual([]);
    expect(device.queueState(0)).toMatchObject({ lastAvail: 40, usedIdx: 40, inFlight: 0 });
  });

  it('rejects completions for heads not in flight and oversize data', async () => {
    rig = await setupRig();
    const { queue, device } = rig;
    const head = queue.addChain([{ data: Buffer.from([1]) }, { writableLength: 4 }]);
    queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 1);
    expect(() => device.complete(0, head, Buffer.alloc(5))).toThrow(/only 4 are writable/);
    expect(() => device.complete(0, (head + 1) % 16, Buffer.alloc(1))).toThrow(/not in flight/);
    device.complete(0, head, Buffer.alloc(4));
    expect(() => device.complete(0, head, Buffer.alloc(1))).toThrow(/not in flight/);
    expect(() => device.complete(5, head, Buffer.alloc(1))).toThrow(/out of range/);
  });

  it('serves two queues independently', async () => {
    rig = await setupRig();
    const second = new MockSplitQueue(rig.memory, 8);
    await second.configure(rig.device, 1);
    const h1 = second.addChain([{ data: Buffer.from('q1') }, { writableLength: 2 }]);
    second.publishAndKick();
    const h0 = rig.queue.addChain([{ data: Buffer.from('q0') }, { writableLength: 2 }]);
    rig.queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 2);
    const byQueue = new Map(rig.chains.map((c) => [c.queue, c]));
    expect(byQueue.get(0)).toMatchObject({ head: h0 });
    expect(byQueue.get(1)).toMatchObject({ head: h1 });
    expect(byQueue.get(1)!.readable.toString()).toBe('q1');
    rig.device.complete(1, h1, Buffer.from('ok'));
    expect(second.reclaim()[0]!.data.toString()).toBe('ok');
    second.close();
  });
});

describe('VirtioDevice: notifications', () => {
  it('signals the call fd unless VRING_AVAIL_F_NO_INTERRUPT is set (no EVENT_IDX)', async () => {
    rig = await setupRig({ features: VirtioFeature.VERSION_1 });
    const { queue, device } = rig;
    const a = queue.addChain([{ data: Buffer.from([1]) }, { writableLength: 1 }]);
    const b = queue.addChain([{ data: Buffer.from([2]) }, { writableLength: 1 }]);
    queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 2);
    queue.setNoInterrupt(true);
    device.complete(0, a, Buffer.from([0]));
    expect(await queue.waitForCall(100)).toBe(false);
    queue.setNoInterrupt(false);
    device.complete(0, b, Buffer.from([0]));
    expect(await queue.waitForCall(2000)).toBe(true);
    expect(queue.usedIdx()).toBe(2);
  });

  it('with EVENT_IDX signals only when used_event is crossed', async () => {
    rig = await setupRig({ features: VirtioFeature.VERSION_1 | VirtioFeature.RING_EVENT_IDX });
    const { queue, device } = rig;
    const heads = [0, 1, 2, 3].map((i) => queue.addChain([{ data: Buffer.from([i]) }, { writableLength: 1 }]));
    queue.setUsedEvent(2); // interrupt once the used entry with index 2 is written
    queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 4);
    device.complete(0, heads[0]!, Buffer.from([0])); // first completion always signals
    expect(await queue.waitForCall(1000)).toBe(true);
    device.complete(0, heads[1]!, Buffer.from([0])); // used idx 2: entry 1 written, event 2 not crossed
    expect(await queue.waitForCall(100)).toBe(false);
    device.complete(0, heads[2]!, Buffer.from([0])); // entry 2 written: crossed
    expect(await queue.waitForCall(1000)).toBe(true);
    device.complete(0, heads[3]!, Buffer.from([0])); // past the event: quiet
    expect(await queue.waitForCall(100)).toBe(false);
  });

  it('with EVENT_IDX ignores VRING_AVAIL_F_NO_INTERRUPT', async () => {
    rig = await setupRig({ features: VirtioFeature.VERSION_1 | VirtioFeature.RING_EVENT_IDX });
    const { queue, device } = rig;
    const head = queue.addChain([{ data: Buffer.from([1]) }, { writableLength: 1 }]);
    queue.setNoInterrupt(true);
    queue.setUsedEvent(0);
    queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 1);
    device.complete(0, head, Buffer.from([0]));
    expect(await queue.waitForCall(1000)).toBe(true);
  });

  it('with EVENT_IDX publishes avail_event after draining', async () => {
    rig = await setupRig({ features: VirtioFeature.VERSION_1 | VirtioFeature.RING_EVENT_IDX });
    const { queue } = rig;
    for (let i = 0; i < 3; i++) queue.addChain([{ data: Buffer.from([i]) }, { writableLength: 1 }]);
    queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 3);
    await waitFor(() => queue.availEvent() === 3, 1000, 'avail_event = 3');
  });

  it('without EVENT_IDX leaves avail_event alone', async () => {
    rig = await setupRig({ features: VirtioFeature.VERSION_1 });
    const { queue } = rig;
    queue.addChain([{ data: Buffer.from([1]) }, { writableLength: 1 }]);
    queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 1);
    await settle(20);
    expect(queue.availEvent()).toBe(0);
  });
});

describe('VirtioDevice: ring life cycle (vhost-user.rst "Starting and stopping rings")', () => {
  it('processes buffers made available before the ring started', async () => {
    rig = await setupRig({ unconfigured: true });
    const { queue, device } = rig;
    queue.addChain([{ data: Buffer.from('early') }, { writableLength: 1 }]);
    queue.publish(); // no kick
    await queue.configure(device, 0);
    await waitFor(() => rig!.chains.length === 1);
    expect(rig.chains[0]!.readable.toString()).toBe('early');
  });

  it('with protocol features waits for SET_VRING_ENABLE', async () => {
    rig = await setupRig({ unconfigured: true, features: VirtioFeature.VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES });
    const { queue, device } = rig;
    await queue.configure(device, 0, { enable: false });
    queue.addChain([{ data: Buffer.from([7]) }, { writableLength: 1 }]);
    queue.publishAndKick();
    await settle();
    expect(rig.chains.length).toBe(0);
    expect(device.queueState(0).started).toBe(false);
    device.setVringEnable(0, true);
    await waitFor(() => rig!.chains.length === 1);
    expect(device.queueState(0).started).toBe(true);
    device.setVringEnable(0, false);
    expect(device.queueState(0).started).toBe(false);
  });

  it('without protocol features starts the ring without SET_VRING_ENABLE', async () => {
    rig = await setupRig({ unconfigured: true, features: VirtioFeature.VERSION_1 });
    await rig.queue.configure(rig.device, 0, { enable: false });
    expect(rig.device.queueState(0).started).toBe(true);
  });

  it('GET_VRING_BASE stops the ring and returns the next avail index; SET_VRING_KICK restarts it', async () => {
    rig = await setupRig();
    const { queue, device } = rig;
    const heads = [0, 1].map((i) => queue.addChain([{ data: Buffer.from([i]) }, { writableLength: 1 }]));
    queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 2);
    expect(device.getVringBase(0)).toBe(2);
    expect(device.queueState(0).started).toBe(false);
    queue.addChain([{ data: Buffer.from([9]) }, { writableLength: 1 }]);
    queue.publishAndKick();
    await settle();
    expect(rig.chains.length).toBe(2);
    // In-flight chains can still complete after the stop.
    device.complete(0, heads[0]!, Buffer.from([1]));
    expect(queue.usedIdx()).toBe(1);
    // Restart as QEMU does: base, addr, kick.
    device.setVringBase(0, 2);
    device.setVringAddr(0, queue.vringAddr());
    const [kick] = await duplicateFds(native, [queue.kickFd]);
    device.setVringKick(0, kick!);
    await waitFor(() => rig!.chains.length === 3);
    expect(rig.chains[2]!.readable).toEqual(Buffer.from([9]));
  });

  it('SET_MEM_TABLE while running re-maps the rings and keeps in-flight chains completable', async () => {
    rig = await setupRig();
    const { queue, device, memory } = rig;
    const head = queue.addChain([{ data: Buffer.from('a') }, { writableLength: 4 }]);
    queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 1);
    device.setMemTable(await memory.regions());
    expect(device.queueState(0).started).toBe(true);
    device.complete(0, head, Buffer.from('done'));
    expect(queue.reclaim()[0]!.data.toString()).toBe('done');
    queue.addChain([{ data: Buffer.from('b') }, { writableLength: 1 }]);
    queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 2);
  });

  it('reset() stops everything and the device can be set up again', async () => {
    rig = await setupRig();
    const { queue, device, memory } = rig;
    queue.addChain([{ data: Buffer.from('x') }, { writableLength: 1 }]);
    queue.publishAndKick();
    await waitFor(() => rig!.chains.length === 1);
    device.reset();
    expect(device.queueState(0)).toEqual({ started: false, size: 0, lastAvail: 0, usedIdx: 0, inFlight: 0 });
    expect(() => device.complete(0, rig!.chains[0]!.head, Buffer.alloc(1))).toThrow(/not in flight/);
    device.setFeatures(VirtioFeature.VERSION_1);
    device.setMemTable(await memory.regions());
    const fresh = new MockSplitQueue(memory, 8);
    await fresh.configure(device, 0);
    fresh.addChain([{ data: Buffer.from('y') }, { writableLength: 1 }]);
    fresh.publishAndKick();
    await waitFor(() => rig!.chains.length === 2);
    fresh.close();
  });

  it('validates device options', () => {
    expect(() => createRecordingDevice({ maxQueueSize: 100 })).toThrow(/power of two/);
    expect(() => createRecordingDevice({ numQueues: 0 })).toThrow(/numQueues/);
  });
});
