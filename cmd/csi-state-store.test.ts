// `vhba csi --state-store`: the flag combinations cmd/csi.ts accepts and the
// clear errors (exit 2) it gives for the rest.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseCsiArgs, runCsi } from './csi.ts';

const base = ['--mode', 'controller', '--endpoint', 'unix:///tmp/csi.sock', '--node-id', 'n1', '--state-dir', '/tmp/s', '--data-dir', '/tmp/d'];

describe('vhba csi --state-store', () => {
  afterEach(() => {
    vi.restoreAllMocks();
    vi.unstubAllEnvs();
  });

  it('defaults to the directory store and takes kubernetes with a namespace', () => {
    expect(parseCsiArgs(base)).toMatchObject({ stateStore: 'directory', stateNamespace: undefined, kubeconfig: undefined });
    expect(parseCsiArgs([...base, '--state-store=kubernetes', '--state-namespace=vhba-system', '--kubeconfig=/k/config'])).toMatchObject({
      stateStore: 'kubernetes', stateNamespace: 'vhba-system', kubeconfig: '/k/config',
    });
  });

  it.each([
    [['--state-store', 'etcd'], /--state-store "etcd" is not one of directory, kubernetes/],
    [['--state-namespace', 'ns'], /--state-namespace needs --state-store kubernetes/],
    [['--state-store', 'directory', '--kubeconfig', '/k'], /--kubeconfig needs --state-store kubernetes/],
    [['--state-store', 'kubernetes'], /--state-store kubernetes needs --state-namespace/],
    [['--state-store', 'kubernetes', '--state-namespace', 'Bad_NS'], /--state-namespace "Bad_NS" is not a Kubernetes namespace name/],
    [['--state-store', 'kubernetes', '--state-namespace', 'ns'], /outside a cluster \(no KUBERNETES_SERVICE_HOST\) needs --kubeconfig/],
  ])('returns 2 with a clear message: %#', async (extra, message) => {
    vi.stubEnv('KUBERNETES_SERVICE_HOST', undefined);
    let err = '';
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => { err += String(chunk); return true; });
    expect(await runCsi([...base, ...extra])).toBe(2);
    expect(err).toMatch(message);
    expect(err).toContain('usage: vhba csi');
  });

  it('returns 1 when the kubeconfig file cannot be read', async () => {
    let err = '';
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => { err += String(chunk); return true; });
    expect(await runCsi([...base, '--state-store=kubernetes', '--state-namespace=ns', '--kubeconfig=/nonexistent/kubeconfig'])).toBe(1);
    expect(err).toMatch(/cannot load --kubeconfig: .*nonexistent/);
  });
});
