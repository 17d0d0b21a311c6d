//! Deletion vectors of link files: which rows of a data file a MERGE has replaced, so that a
//! run touching a few keys of a large file writes those keys anew instead of copying the file.
//!
//! The on-disk form is the Delta protocol's ("Deletion Vector Format"): a file
//! `deletion_vector_<uuid>.bin` in the table's folder holding a version byte, then per vector
//! its size (big-endian), the `RoaringBitmapArray` (magic 1681511377 and a 64-bit roaring
//! bitmap, little-endian, portable layout) and its CRC-32 (big-endian); the descriptor in the
//! log names the file by its UUID in Z85. Inline vectors (`i`) are read too (other engines write
//! them); deltalink writes one file per key range a MERGE marks, holding the vectors of its files.

use std::io::Cursor;
use std::sync::Arc;

use color_eyre::eyre::{bail, eyre, Result, WrapErr};
use deltalake::kernel::{DeletionVectorDescriptor, StorageType};
use deltalake::{ObjectStore, Path};
use deltalake::logstore::object_store::ObjectStoreExt;
use roaring::RoaringTreemap;

const PORTABLE_MAGIC: u32 = 1681511377;
const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Whether deltalink can read this vector: stored beside the table or inline.
pub(super) fn readable(dv: &DeletionVectorDescriptor) -> bool {
    matches!(dv.storage_type, StorageType::UuidRelativePath | StorageType::Inline)
}

/// The rows `dv` deletes, as row indices of its data file.
pub(super) async fn read(store: &Arc<dyn ObjectStore>, dv: &DeletionVectorDescriptor) -> Result<RoaringTreemap> {
    let bitmap_array = match dv.storage_type {
        StorageType::Inline => {
            z85::decode(&dv.path_or_inline_dv).map_err(|e| eyre!("inline deletion vector is not Z85: {e}"))?
        }
        StorageType::UuidRelativePath => {
            let path = relative_path(&dv.path_or_inline_dv)?;
            let offset = dv.offset.unwrap_or(1).max(0) as u64;
            let size = u64::try_from(dv.size_in_bytes).map_err(|_| eyre!("deletion vector {path} has a negative size"))?;
            // The file's version byte (when the vector is the first, it is right before it),
            // the size prefix, the vector, and its checksum. A store returns what there is of a
            // range past the end of a file: every slice below is checked.
            let from = if offset == 1 { 0 } else { offset };
            let bytes = store
                .get_range(&path, from..offset + 4 + size + 4)
                .await
                .wrap_err_with(|| format!("cannot read deletion vector {path}"))?;
            if offset == 1 && bytes.first() != Some(&1) {
                bail!("deletion vector file {path} is not of format version 1");
            }
            let bytes = &bytes[(offset - from) as usize..];
            let stored = u32::from_be_bytes(prefix(bytes, 0)?) as u64;
            if stored != size {
                bail!("deletion vector {path} holds {stored} bytes where the log says {size}");
            }
            let data = bytes.get(4..4 + size as usize).ok_or_else(|| eyre!("deletion vector {path} is truncated"))?;
            let crc = u32::from_be_bytes(prefix(bytes, 4 + size as usize)?);
            if CRC.checksum(data) != crc {
                bail!("deletion vector {path} fails its checksum: the file is damaged");
            }
            data.to_vec()
        }
        StorageType::AbsolutePath => bail!("deletion vectors at absolute paths are not read by deltalink"),
    };
    if u32::from_le_bytes(prefix(&bitmap_array, 0)?) != PORTABLE_MAGIC {
        bail!("deletion vector is not a portable RoaringBitmapArray (wrong magic number)");
    }
    let bitmap = RoaringTreemap::deserialize_from(Cursor::new(&bitmap_array[4..])).wrap_err("cannot decode a deletion vector")?;
    if bitmap.len() != dv.cardinality.max(0) as u64 {
        bail!("deletion vector holds {} rows where the log says {}", bitmap.len(), dv.cardinality);
    }
    Ok(bitmap)
}

/// Write `vectors` into one deletion-vector file in the table's folder (each at its offset);
/// their descriptors, in order, and the file's path.
pub(super) async fn write(store: &Arc<dyn ObjectStore>, vectors: &[RoaringTreemap]) -> Result<(Vec<DeletionVectorDescriptor>, Path)> {
    let uuid = uuid::Uuid::new_v4();
    let mut file = vec![1u8];
    let mut descriptors = Vec::with_capacity(vectors.len());
    for deleted in vectors {
        let mut data = Vec::with_capacity(4 + deleted.serialized_size());
        data.extend_from_slice(&PORTABLE_MAGIC.to_le_bytes());
        deleted.serialize_into(&mut data).wrap_err("cannot encode a deletion vector")?;
        let size = i32::try_from(data.len()).map_err(|_| eyre!("deletion vector over 2 GiB"))?;
        let offset = i32::try_from(file.len()).map_err(|_| eyre!("deletion vectors over 2 GiB in one file"))?;
        file.extend_from_slice(&(size as u32).to_be_bytes());
        file.extend_from_slice(&data);
        file.extend_from_slice(&CRC.checksum(&data).to_be_bytes());
        descriptors.push(DeletionVectorDescriptor {
            storage_type: StorageType::UuidRelativePath,
            path_or_inline_dv: z85::encode(uuid.as_bytes()),
            offset: Some(offset),
            size_in_bytes: size,
            cardinality: deleted.len() as i64,
        });
    }
    let path = Path::from(format!("deletion_vector_{uuid}.bin"));
    store.put(&path, file.into()).await.wrap_err_with(|| format!("cannot write deletion vector {path}"))?;
    Ok((descriptors, path))
}

/// `<prefix><Z85 of the UUID>` → `<prefix>/deletion_vector_<uuid>.bin`.
fn relative_path(encoded: &str) -> Result<Path> {
    let split = encoded.len().checked_sub(20).filter(|&at| encoded.is_char_boundary(at));
    let Some(split) = split else { bail!("deletion vector path `{encoded}` is shorter than a UUID") };
    let (prefix, id) = encoded.split_at(split);
    let bytes = z85::decode(id).map_err(|e| eyre!("deletion vector path `{encoded}` is not Z85: {e}"))?;
    let uuid = uuid::Uuid::from_slice(&bytes).wrap_err_with(|| format!("deletion vector path `{encoded}`"))?;
    Ok(Path::from(match prefix {
        "" => format!("deletion_vector_{uuid}.bin"),
        prefix => format!("{prefix}/deletion_vector_{uuid}.bin"),
    }))
}

fn prefix(bytes: &[u8], at: usize) -> Result<[u8; 4]> {
    bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).ok_or_else(|| eyre!("deletion vector is truncated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn written_vectors_read_back_with_their_rows() -> Result<()> {
        let store: Arc<dyn ObjectStore> = Arc::new(deltalake::logstore::object_store::memory::InMemory::new());
        let first: RoaringTreemap = [0u64, 7, 65_536, 1 << 33].into_iter().collect();
        let second: RoaringTreemap = (1_000..1_500u64).collect();
        let (dvs, path) = write(&store, &[first.clone(), second.clone()]).await?;
        assert_eq!(relative_path(&dvs[0].path_or_inline_dv)?, path);
        assert_eq!(read(&store, &dvs[0]).await?, first);
        assert_eq!(read(&store, &dvs[1]).await?, second, "the second vector of the file, at its offset");
        let dv = &dvs[0];
        let mut damaged = dv.clone();
        damaged.cardinality = 3;
        assert!(read(&store, &damaged).await.is_err(), "a cardinality the vector does not hold is refused");
        let mut past_the_end = dv.clone();
        past_the_end.size_in_bytes += 1_000;
        assert!(read(&store, &past_the_end).await.is_err(), "a vector running past its file is refused, not a panic");
        let mut second = dvs[1].clone();
        second.offset = Some(1);
        assert!(read(&store, &second).await.is_err(), "a descriptor pointing at the wrong vector fails its size or checksum");
        Ok(())
    }

    /// Vectors in another writer's layout (the `dv-table` fixture: two in files beside the
    /// table, one inline): every one reads with the cardinality its descriptor states.
    #[tokio::test]
    async fn vectors_of_the_fixture_table_read_with_their_cardinality() -> Result<()> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dv-table");
        let store: Arc<dyn ObjectStore> = Arc::new(deltalake::logstore::object_store::local::LocalFileSystem::new_with_prefix(&root)?);
        let mut read_back = Vec::new();
        for entry in std::fs::read_dir(root.join("_delta_log"))? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            for line in std::fs::read_to_string(&path)?.lines() {
                let action: serde_json::Value = serde_json::from_str(line)?;
                if let Some(dv) = action.get("add").and_then(|a| a.get("deletionVector")).filter(|dv| !dv.is_null()) {
                    let dv: DeletionVectorDescriptor = serde_json::from_value(dv.clone())?;
                    assert!(readable(&dv));
                    read_back.push((read(&store, &dv).await?.len(), dv.cardinality as u64, dv.storage_type));
                }
            }
        }
        read_back.sort_by_key(|r| r.0);
        assert_eq!(read_back.len(), 3, "the fixture adds three vectors");
        assert!(read_back.iter().all(|(rows, cardinality, _)| rows == cardinality));
        assert!(read_back.iter().any(|(_, _, storage)| *storage == StorageType::Inline), "one of them inline");
        Ok(())
    }
}
