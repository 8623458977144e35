// Tests of the native unix-socket layer: vhost-user framing (12-byte header,
// body of exactly `size` bytes, SCM_RIGHTS fds), its limits, and the
// listener / connect / close life cycle.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { native, type RawMessage, type UnixConnection } from './index.ts';
import { settle, waitFor } from './device-harness.ts';

/** A vhost-user frame: header (request, flags, size) + body. */
function frame(request: number, body: Buffer, flags = 1): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt32LE(request, 0);
  header.writeUInt32LE(flags, 4);
  header.writeUInt32LE(body.length, 8);
  return Buffer.concat([header, body]);
}

/** Starts `conn` recording messages and close reasons. */
function record(conn: UnixConnection) {
  const messages: RawMessage[] = [];
  const closes: (string | null)[] = [];
  conn.start(
    (m) => messages.push(m),
    (r) => closes.push(r),
  );
  return { messages, closes };
}

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

function pair(): [UnixConnection, UnixConnection] {
  const p = native.socketPair();
  cleanup.push(() => {
    p[0].close();
    p[1].close();
  });
  return p;
}

describe('UnixConnection framing', () => {
  it('delivers header, body and SCM_RIGHTS fds of one message', async () => {
    const [a, b] = pair();
    const rx = record(b);
    const ev = native.eventfd();
    a.send(frame(5, Buffer.from('body!')), [ev, ev]);
    await waitFor(() => rx.messages.length === 1);
    const m = rx.messages[0]!;
    expect(m.header.readUInt32LE(0)).toBe(5);
    expect(m.header.readUInt32LE(8)).toBe(5);
    expect(m.body.toString()).toBe('body!');
    expect(m.fds).toHaveLength(2);
    // The received fds are new descriptors for the same eventfd.
    expect(m.fds[0]).not.toBe(ev);
    native.eventfdSignal(m.fds[0]!);
    expect(await native.eventfdWait(ev, 1000)).toBe(true);
    for (const fd of [...m.fds, ev]) native.closeFd(fd);
  });

  it('splits several messages sent in one write and keeps fds with their message', async () => {
    const [a, b] = pair();
    const rx = record(b);
    const ev = native.eventfd();
    a.send(frame(1, Buffer.alloc(0)));
    a.send(frame(2, Buffer.from('x')), [ev]);
    a.send(Buffer.concat([frame(3, Buffer.from('yy')), frame(4, Buffer.alloc(4096, 7))]));
    await waitFor(() => rx.messages.length === 4);
    expect(rx.messages.map((m) => m.header.readUInt32LE(0))).toEqual([1, 2, 3, 4]);
    expect(rx.messages.map((m) => m.fds.length)).toEqual([0, 1, 0, 0]);
    expect(rx.messages[3]!.body).toEqual(Buffer.alloc(4096, 7));
    native.closeFd(rx.messages[1]!.fds[0]!);
    native.closeFd(ev);
  });

  it('reassembles messages arriving in pieces', async () => {
    const [a, b] = pair();
    const rx = record(b);
    const bytes = frame(9, Buffer.from('0123456789'));
    a.send(bytes.subarray(0, 5));
    await settle(20);
    a.send(bytes.subarray(5, 14));
    await settle(20);
    expect(rx.messages).toHaveLength(0);
    a.send(bytes.subarray(14));
    await waitFor(() => rx.messages.length === 1);
    expect(rx.messages[0]!.body.toString()).toBe('0123456789');
    expect(rx.closes).toEqual([]);
  });

  it('closes with a reason when the body is larger than 4096 bytes', async () => {
    const [a, b] = pair();
    const rx = record(b);
    const header = Buffer.alloc(12);
    header.writeUInt32LE(4097, 8);
    a.send(header);
    await waitFor(() => rx.closes.length === 1);
    expect(rx.closes[0]).toMatch(/4097 bytes exceeds 4096/);
    expect(rx.messages).toHaveLength(0);
  });

  it('closes with a reason when a message carries more than 8 fds', async () => {
    const [a, b] = pair();
    const rx = record(b);
    const ev = native.eventfd();
    const bytes = frame(1, Buffer.from('z'));
    a.send(bytes.subarray(0, 12), new Array<number>(8).fill(ev));
    a.send(bytes.subarray(12), [ev]);
    await waitFor(() => rx.closes.length === 1);
    expect(rx.closes[0]).toMatch(/more than 8 fds/);
    expect(rx.messages).toHaveLength(0);
    expect(() => a.send(frame(1, Buffer.alloc(0)), new Array<number>(9).fill(ev))).toThrow(/at most 8 fds/);
    native.closeFd(ev);
  });

  it('reports EOF in the middle of a message', async () => {
    const [a, b] = pair();
    const rx = record(b);
    a.send(frame(1, Buffer.from('abc')).subarray(0, 13));
    a.close();
    await waitFor(() => rx.closes.length === 1);
    expect(rx.closes[0]).toMatch(/middle of a message/);
  });

  it('calls onClose exactly once, with null, on EOF and after close()', async () => {
    const [a, b] = pair();
    const ra = record(a);
    const rb = record(b);
    a.close();
    expect(ra.closes).toEqual([]); // never from inside close()
    await waitFor(() => ra.closes.length === 1 && rb.closes.length === 1);
    a.close();
    b.close();
    await settle(20);
    expect(ra.closes).toEqual([null]);
    expect(rb.closes).toEqual([null]);
    expect(() => a.send(Buffer.from('x'))).toThrow(/closed/);
  });

  it('closes fds of a message that never completed', async () => {
    const [a, b] = pair();
    const rx = record(b);
    const ev = native.eventfd();
    a.send(frame(1, Buffer.from('abc')).subarray(0, 12), [ev]);
    await settle(20);
    const before = fs.readdirSync('/proc/self/fd').length;
    a.close();
    await waitFor(() => rx.closes.length === 1);
    const after = fs.readdirSync('/proc/self/fd').length;
    expect(after).toBeLessThanOrEqual(before - 2); // the socket and the received fd
    native.closeFd(ev);
  });

  it('reports peer credentials', () => {
    const [a] = pair();
    expect(a.peerCredentials()).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
  });
});

describe('listenUnix / connectUnix', () => {
  function tempPath(): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhba-sock-'));
    cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    return path.join(dir, 'hba0.sock');
  }

  it('accepts connections, exchanges messages and unlinks on close', async () => {
    const p = tempPath();
    const accepted: UnixConnection[] = [];
    const listener = native.listenUnix(p, 0o660, (c) => accepted.push(c));
    expect(fs.statSync(p).mode & 0o777).toBe(0o660);
    const client = native.connectUnix(p);
    await waitFor(() => accepted.length === 1);
    const server = accepted[0]!;
    const rx = record(server);
    client.send(frame(1, Buffer.from('hello')));
    await waitFor(() => rx.messages.length === 1);
    expect(rx.messages[0]!.body.toString()).toBe('hello');
    expect(server.peerCredentials().pid).toBe(process.pid);
    // A second connection on the same socket after the first closed.
    server.close();
    client.close();
    const again = native.connectUnix(p);
    await waitFor(() => accepted.length === 2);
    again.close();
    accepted[1]!.close();
    listener.close();
    listener.close();
    expect(fs.existsSync(p)).toBe(false);
    expect(() => native.connectUnix(p)).toThrow(/No such file or directory/);
  });

  it('replaces a stale socket file but refuses a live one or a non-socket', () => {
    const p = tempPath();
    // A process that bound the path and exited leaves a stale socket file.
    const r = spawnSync(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(p)}, () => process.exit(0))`,
    ]);
    expect(r.status).toBe(0);
    expect(fs.lstatSync(p).isSocket()).toBe(true);
    const listener = native.listenUnix(p, 0o600, () => {});
    expect(() => native.listenUnix(p, 0o600, () => {})).toThrow(/in use/);
    listener.close();
    fs.writeFileSync(p, 'not a socket');
    expect(() => native.listenUnix(p, 0o600, () => {})).toThrow(/not a socket/);
  });

  it('rejects paths too long for sun_path', () => {
    expect(() => native.connectUnix('/tmp/' + 'x'.repeat(200))).toThrow(/unix socket path/);
  });
});
