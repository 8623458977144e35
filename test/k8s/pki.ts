// A throwaway PKI for a test API server: a CA, a serving certificate for
// 127.0.0.1/localhost, client certificates (user = CN, groups = O, as the
// API server's x509 authenticator reads them), and a service-account key
// pair. Keys come from node:crypto (EC P-256, PKCS#8 PEM); certificates are
// signed with the openssl CLI (node:crypto cannot issue X.509 certificates).
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Certificates are valid this long: a test cluster never outlives a day. */
const VALID_DAYS = 2;

/** A certificate and its private key, as PEM files. */
export interface CertKeyPair {
  certPath: string;
  keyPath: string;
}

/** The files a test API server needs. */
export interface TestPki {
  dir: string;
  ca: CertKeyPair;
  /** Serving certificate for https://127.0.0.1 (SANs: IP 127.0.0.1, DNS localhost). */
  serving: CertKeyPair;
  /** Service-account token signing key (private) and verification key (public). */
  serviceAccount: { privateKeyPath: string; publicKeyPath: string };
}

/** Writes a fresh EC P-256 private key (PKCS#8 PEM, mode 0600) and returns its public key PEM. */
function writeKey(path: string): string {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  writeFileSync(path, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  return publicKey.export({ type: 'spki', format: 'pem' }).toString();
}

/** Runs openssl; a failure carries openssl's stderr. */
function openssl(args: string[]): void {
  try {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const e = err as { code?: string; stderr?: Buffer; message: string };
    if (e.code === 'ENOENT') throw new Error('openssl not found: install the Debian package "openssl"', { cause: err });
    throw new Error(`openssl ${args[0]} failed: ${e.stderr?.toString().trim() ?? e.message}`, { cause: err });
  }
}

/** An openssl -subj string; rejects characters that would change its structure. */
function subject(commonName: string, organizations: readonly string[]): string {
  for (const part of [commonName, ...organizations]) {
    if (!/^[A-Za-z0-9:._@-]+$/.test(part)) throw new Error(`unsupported character in certificate name "${part}"`);
  }
  return organizations.map((o) => `/O=${o}`).join('') + `/CN=${commonName}`;
}

/** Issues a certificate signed by `ca` with the given X.509v3 extensions (RFC 5280 §4.2). */
function issue(dir: string, name: string, ca: CertKeyPair, subj: string, extensions: string[]): CertKeyPair {
  const keyPath = join(dir, `${name}.key`);
  const csrPath = join(dir, `${name}.csr`);
  const certPath = join(dir, `${name}.crt`);
  const extPath = join(dir, `${name}.ext`);
  writeKey(keyPath);
  writeFileSync(extPath, extensions.join('\n') + '\n');
  openssl(['req', '-new', '-key', keyPath, '-subj', subj, '-out', csrPath]);
  openssl([
    'x509', '-req', '-in', csrPath, '-CA', ca.certPath, '-CAkey', ca.keyPath,
    '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', String(VALID_DAYS),
    '-sha256', '-extfile', extPath, '-out', certPath,
  ]);
  return { certPath, keyPath };
}

/** Creates the CA, the serving certificate and the service-account keys in `dir`. */
export function createTestPki(dir: string): TestPki {
  const ca: CertKeyPair = { certPath: join(dir, 'ca.crt'), keyPath: join(dir, 'ca.key') };
  writeKey(ca.keyPath);
  openssl([
    'req', '-x509', '-new', '-key', ca.keyPath, '-subj', subject('vhba-test-ca', []),
    '-days', String(VALID_DAYS), '-sha256', '-out', ca.certPath,
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  const serving = issue(dir, 'serving', ca, subject('kube-apiserver', []), [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
    'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ]);
  const privateKeyPath = join(dir, 'sa.key');
  const publicKeyPath = join(dir, 'sa.pub');
  writeFileSync(publicKeyPath, writeKey(privateKeyPath));
  return { dir, ca, serving, serviceAccount: { privateKeyPath, publicKeyPath } };
}

/**
 * Issues a client certificate for `user` in `groups` (x509 authenticator:
 * CN = user name, each O = a group). Group "system:masters" is a superuser.
 */
export function issueClientCert(pki: TestPki, user: string, groups: readonly string[]): CertKeyPair {
  const fileName = `client-${user.replace(/[^A-Za-z0-9._-]/g, '_')}`;
  return issue(pki.dir, fileName, pki.ca, subject(user, groups), [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=clientAuth',
  ]);
}
