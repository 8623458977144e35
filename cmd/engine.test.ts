// `vhba engine` as the node DaemonSet runs it: bin/vhba spawned with
// --socket-owner and --metrics-addr; a controller created through the control
// API gets a socket owned by the socket owner and shows up in /metrics with
// the limits from VHBA_LIMIT_*.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { lstatSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { connectEngine } from './engine-client.ts';

const bin = new URL('../bin/vhba', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'vhba-engine-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Resolves with the first stdout line matching `re`; rejects if the process exits first. */
function waitForLine(proc: ChildProcess, re: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => re.test(l));
      if (line !== undefined) resolve(line);
    });
    proc.once('exit', (code) => reject(new Error(`vhba engine exited ${code}: ${err}`)));
  });
}

describe('vhba engine --socket-owner --metrics-addr', () => {
  it('rejects a malformed owner, mode or metrics address with exit code 2', () => {
    for (const bad of [['--socket-owner', 'qemu'], ['--socket-mode', '0666'], ['--metrics-addr', 'localhost']]) {
      const r = spawnSync(bin, ['engine', '--socket-dir', join(dir, 'bad'), '--control-socket', join(dir, 'bad.sock'), ...bad], { encoding: 'utf8', timeout: 30_000 });
      expect(r.status, bad.join(' ')).toBe(2);
      expect(r.stderr).toMatch(new RegExp(`--${bad[0]!.slice(2)}|${bad[1]}`));
    }
  });

  it('hands sockets to 107:107 and serves /metrics and /healthz', async () => {
    const control = join(dir, 'run', 'engine.sock');
    const proc = spawn(bin, ['engine', '--socket-dir', join(dir, 'run', 'vms'), '--control-socket', control, '--socket-owner', '107:107', '--metrics-addr', '127.0.0.1:0', '--log-level', 'warn'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, VHBA_LIMIT_LUNS: '7' },
    });
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    const client = connectEngine(`unix://${control}`);
    try {
      const line = await waitForLine(proc, /vhba engine: control API at/);
      const url = /metrics at (http:\/\/127\.0\.0\.1:\d+)\/metrics/.exec(line)?.[1];
      expect(url, line).toBeDefined();
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      const socketPath = join(dir, 'run', 'vms', 'vm1', 'hba0.sock');
      await client.createController({ id: 'default/vm1/hba0', socketPath, numRequestQueues: 1 });
      if (process.getuid?.() === 0) {
        expect(lstatSync(socketPath).uid).toBe(107);
        expect(lstatSync(join(dir, 'run', 'vms', 'vm1')).uid).toBe(107);
      }
      const text = await (await fetch(`${url}/metrics`)).text();
      expect(text).toContain('vhba_controller_connected{controller="default/vm1/hba0"} 0\n');
      expect(text).toContain('vhba_controller_limit_luns{controller="default/vm1/hba0"} 7\n');
    } finally {
      client.close();
      proc.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });
});
