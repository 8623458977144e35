// The /dev/disk/by-id names a Linux guest's udev creates for a vhba disk.
//
// What vhba exposes (hba/scsi, SPC-4 §7.8.6): VPD 0x83 carries a NAA
// designator (the WWN; designator type 3) and a T10 vendor ID designator
// ("VHBA    " + serial; type 1); VPD 0x80 carries the serial.
//
// What the guest does (systemd 252, rules.d/60-persistent-storage.rules, no
// sg3-utils-udev installed): `scsi_id --export --whitelisted` imports
//   ID_SERIAL = <designator type as one hex digit> + <designator as lowercase hex>
// choosing, in scsi_id's preference order (scsi_serial.c id_search_list),
// NAA IEEE registered extended (6), NAA IEEE registered (5), any other NAA
// (2, 3), then EUI-64, then T10 vendor ID. Our NAA designator always wins, so
// ID_SERIAL = "3" + wwn hex, and the rules add
//   disk/by-id/scsi-$ID_SERIAL             → scsi-3<wwn hex>
//   disk/by-id/wwn-$ID_WWN_WITH_EXTENSION  → wwn-0x<wwn hex>  (NAA 6: all 32 digits)
//
// Not predicted here (they depend on optional packages or rule versions):
// sg3-utils-udev's 55-scsi-sg3_id.rules adds scsi-S<vendor>_<product>_<serial>
// style and scsi-1<T10 designator> links. Another check in a real guest
// (test/e2e) is the authority; adjust this function if it disagrees.
//
// Passthrough LUNs (deviceType lun) show the device's own VPD 0x83, and the
// same rules apply to it: with a NAA designator, the two names above from
// that designator (the host's udev makes the same ones, so host and guest
// share the by-id path). A device without a NAA designator gets its names
// from an EUI-64 or T10 vendor ID designator, or from vendor, model and
// serial, which vhba does not know in full: no names are predicted for it
// (an empty list) and callers say that the guest's /dev/disk/by-id has them.

/** The identity a disk shows in VPD pages 0x80 and 0x83. */
export interface DiskIdentity {
  serial: string;
  /** Lowercase (or any case) hex, with or without 0x. */
  wwn: string;
}

/** Directory of the names. */
export const BY_ID_DIR = '/dev/disk/by-id';

/** The by-id paths, most specific first: scsi-3<wwn>, wwn-0x<wwn>; none
 * when the WWN is '' (a device without a NAA designator, or not known yet). */
export function predictGuestPaths(identity: DiskIdentity): string[] {
  const hex = identity.wwn.replace(/^0[xX]/, '').toLowerCase();
  if (hex === '') return [];
  return [`${BY_ID_DIR}/scsi-3${hex}`, `${BY_ID_DIR}/wwn-0x${hex}`];
}

// The inverse, for the expected identity of a passthrough disk: a hostDevice
// path that is one of the names above (as the host's udev made them from the
// device's NAA designator) says which WWN the device must have. Only the
// whole-LUN names count: a "-partN" link is a partition, and other by-id
// names (scsi-S…, scsi-1…, ata-…) carry no NAA designator.
const NAA_HEX = '([235][0-9a-fA-F]{15}|6[0-9a-fA-F]{31})';
const BY_ID_WWN = new RegExp(`^${BY_ID_DIR}/(?:wwn-0x|scsi-3)${NAA_HEX}$`);

/** The WWN (lowercase hex, no 0x) named by `/dev/disk/by-id/wwn-0x<naa>` or
 * `/dev/disk/by-id/scsi-3<naa>`; undefined for any other path. */
export function wwnFromByIdPath(path: string): string | undefined {
  return BY_ID_WWN.exec(path)?.[1]?.toLowerCase();
}

/** The WWN a passthrough disk's device must have: the spec's (already
 * normalised) when given, else the one its hostDevice path names, else
 * undefined (whatever the device has). */
export function expectedPassthroughWwn(specWwn: string | undefined, hostDevicePath: string | undefined): string | undefined {
  if (specWwn !== undefined) return specWwn;
  return hostDevicePath === undefined ? undefined : wwnFromByIdPath(hostDevicePath);
}
