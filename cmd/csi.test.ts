import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseCsiArgs, runCsi } from './csi.ts';

const CLI = resolve(import.meta.dirname, 'csi.ts');
const good = ['--mode', 'all', '--endpoint', 'unix:///tmp/csi.sock', '--node-id', 'n1', '--state-dir', '/tmp/s', '--data-dir', '/tmp/d', '--engine-endpoint', 'unix:///tmp/e.sock'];

describe('vhba csi flags', () => {
  afterEach(() => vi.restoreAllMocks());

  it('parses a full command line with defaults', () => {
    expect(parseCsiArgs(good)).toMatchObject({ mode: 'all', publishRoot: '/var/lib/kubelet', socketDir: '/tmp/s/sockets', maxVolumesPerNode: 256 });
    expect(parseCsiArgs(['--mode', 'controller', ...good.slice(2, 10)])).toMatchObject({ mode: 'controller', engineEndpoint: undefined });
  });

  it.each([
    [['--mode', 'both', ...good.slice(2)], /--mode "both" is not one of controller, node, all/],
    [good.filter((_, i) => i !== 2 && i !== 3), /--endpoint is required/],
    [[...good.slice(0, 3), 'tcp://1.2.3.4:5', ...good.slice(4)], /must look like unix:\/\/\/absolute/],
    [good.slice(0, 10), /--engine-endpoint is required/],
    [[...good, '--state-dir', 'relative'], /must be an absolute path/],
    [[...good, '--bogus'], /Unknown option '--bogus'/],
    [[...good, '--max-volumes', '-1'], /--max-volumes|argument missing|ambiguous/],
  ])('returns 2 with a clear message: %#', async (argv, message) => {
    let err = '';
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => { err += String(chunk); return true; });
    expect(await runCsi(argv)).toBe(2);
    expect(err).toMatch(message);
    expect(err).toContain('usage: vhba csi');
  });

  it('exits the process with status 2 on a bad flag', () => {
    const r = spawnSync(process.execPath, [CLI, '--mode', 'nope'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--mode "nope"/);
  }, 60_000);
});
