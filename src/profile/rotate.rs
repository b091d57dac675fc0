//! Master key rotation (`smdpplus keys rotate-master`): a new key is added
//! to the key file, every wrapped secret (PPKs and personalization values)
//! is re-wrapped under it record by record while the server keeps serving,
//! then the old keys are retired.

use super::protect::Keyring;
use super::stored::StoredPackage;
use crate::error::Error;
use crate::store::Store;
use std::path::Path;

/// Re-wraps every stored secret under the ring's current key. Returns how
/// many records changed. `progress` hears (done, total).
pub fn rewrap_all(
    store: &Store,
    ring: &Keyring,
    progress: impl FnMut(usize, usize),
) -> Result<usize, Error> {
    store.rewrite_packages(
        |bytes, iccid| {
            let fail = |e: super::protect::ProtectError| Error::internal(format!("{iccid}: {e}"));
            let mut p = StoredPackage::from_bytes(bytes).map_err(fail)?;
            Ok(if p.rewrap(ring, iccid).map_err(fail)? {
                Some(p.to_bytes())
            } else {
                None
            })
        },
        progress,
    )
}

/// The whole rotation on a store nobody else has open: add a key, re-wrap,
/// flush, retire the old keys. Returns the new key id and the records changed.
pub fn rotate_offline(
    store: &Store,
    key_file: &Path,
    progress: impl FnMut(usize, usize),
) -> Result<(u32, usize), Error> {
    let (mut ring, _) =
        Keyring::load_or_create(key_file).map_err(|e| Error::internal(e.to_string()))?;
    let id = ring
        .rotate(key_file)
        .map_err(|e| Error::internal(e.to_string()))?;
    let n = rewrap_all(store, &ring, progress)?;
    store.flush_blocking()?;
    ring.retire_old(key_file)
        .map_err(|e| Error::internal(e.to_string()))?;
    Ok((id, n))
}
