// The real kube-apiserver + etcd harness (test/k8s) end to end: a CRD with
// CEL validation rules (x-kubernetes-validations) applied server-side with
// the real kubectl; valid objects are stored, invalid ones are rejected at
// admission with a message naming the field; RBAC is really enforced.
// Needs scripts/build-go-tools.sh to have built kube-apiserver, etcd, kubectl.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApiServer, type TestApiServer } from '../k8s/apiserver.ts';
import { kubectl, kubectlOk } from '../k8s/kubectl.ts';
import { missingToolsReason } from '../k8s/tools.ts';

const skipReason = missingToolsReason(['kube-apiserver', 'etcd', 'kubectl']);
if (skipReason) console.warn(`apiserver-smoke: SKIPPED, ${skipReason}`);

const CRD_NAME = 'smokewidgets.test.vhba.io';

// Serial: schema allows up to 20 characters; CEL narrows the charset and
// makes it immutable (a transition rule, compared with oldSelf).
const CRD = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: ${CRD_NAME}
spec:
  group: test.vhba.io
  scope: Namespaced
  names: { plural: smokewidgets, singular: smokewidget, kind: SmokeWidget }
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [serial, blockSize]
              properties:
                serial:
                  type: string
                  maxLength: 20
                  x-kubernetes-validations:
                    - rule: "self.matches('^[A-Za-z0-9]+$')"
                      message: serial must be ASCII letters and digits
                    - rule: self == oldSelf
                      message: serial is immutable
                blockSize:
                  type: integer
                  x-kubernetes-validations:
                    - rule: self == 512 || self == 4096
                      message: must be 512 or 4096
`;

/** A SmokeWidget manifest in namespace default. */
function widget(name: string, serial: string, blockSize: number): string {
  return `
apiVersion: test.vhba.io/v1
kind: SmokeWidget
metadata: { name: ${name}, namespace: default }
spec: { serial: "${serial}", blockSize: ${blockSize} }
`;
}

describe.skipIf(skipReason !== undefined)(`apiserver smoke${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  let cluster: TestApiServer | undefined;
  const kc = (): string => {
    if (!cluster) throw new Error('API server not started');
    return cluster.kubeconfigPath;
  };
  const apply = (manifest: string) =>
    kubectl(kc(), ['apply', '--server-side', '--field-manager=vhba-smoke', '-f', '-'], { input: manifest });

  beforeAll(async () => {
    const t0 = Date.now();
    cluster = await startTestApiServer();
    console.log(`apiserver-smoke: etcd + kube-apiserver ready in ${Date.now() - t0} ms at ${cluster.server}`);
    await kubectlOk(kc(), ['apply', '--server-side', '--field-manager=vhba-smoke', '-f', '-'], { input: CRD });
    await kubectlOk(kc(), ['wait', '--for=condition=Established', `crd/${CRD_NAME}`, '--timeout=60s']);
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  it('serves its version and stores a valid object', async () => {
    const version = JSON.parse(await kubectlOk(kc(), ['version', '-o', 'json'])) as {
      serverVersion?: { gitVersion?: string };
    };
    expect(version.serverVersion?.gitVersion).toMatch(/^v1\.\d+\.\d+$/);

    const res = await apply(widget('good', 'ABC123', 4096));
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    const stored = JSON.parse(await kubectlOk(kc(), ['get', 'smokewidget', 'good', '-n', 'default', '-o', 'json'])) as {
      spec: { serial: string; blockSize: number };
    };
    expect(stored.spec).toEqual({ serial: 'ABC123', blockSize: 4096 });
  });

  it('rejects a CEL violation with a message naming the field', async () => {
    const badSerial = await apply(widget('bad-serial', 'not ok!', 512));
    expect(badSerial.code).not.toBe(0);
    expect(badSerial.stderr).toContain('spec.serial');
    expect(badSerial.stderr).toContain('serial must be ASCII letters and digits');

    const badBlock = await apply(widget('bad-block', 'XYZ', 1000));
    expect(badBlock.code).not.toBe(0);
    expect(badBlock.stderr).toContain('spec.blockSize');
    expect(badBlock.stderr).toContain('must be 512 or 4096');

    // Neither was stored.
    const names = await kubectlOk(kc(), ['get', 'smokewidgets', '-n', 'default', '-o', 'name']);
    expect(names.trim().split('\n')).toEqual(['smokewidget.test.vhba.io/good']);
  });

  it('enforces a transition rule (immutable field) on update', async () => {
    const res = await apply(widget('good', 'CHANGED1', 4096));
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('spec.serial');
    expect(res.stderr).toContain('serial is immutable');
  });

  it('authorizes with RBAC: a user with no bindings is forbidden', async () => {
    if (!cluster) throw new Error('API server not started');
    const nobody = cluster.kubeconfigFor('nobody', []);
    const res = await kubectl(nobody, ['get', 'smokewidgets', '-n', 'default']);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/forbidden: User "nobody" cannot list resource "smokewidgets"/);
  });
});
