//! Extend and manage-existing.

use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::pool::Pool;
use crate::recipes::saga::Saga;

use super::{validate_id, validate_size, volume_info, volume_name, Volume};

/// Grows volume `volume-<id>` to `new_size` bytes (Cinder's `extend_volume`); the same size is
/// a no-op. Wraps `rbd_resize2`.
///
/// Failpoints: `cinder.extend.{inspect,resize,describe,commit}` (a failure after the resize
/// shrinks the volume back).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] for a bad id or a size below the current one (volumes never
/// shrink; nothing changed), [`ErrorKind::NotFound`] when the volume is missing.
pub fn extend(pool: &Pool, volume_id: &str, new_size: u64) -> Result<Volume> {
    const OP: &str = "cinder.extend";
    validate_id(OP, "volume id", volume_id)?;
    validate_size(OP, new_size)?;
    let name = volume_name(volume_id);
    let _span = tracing::info_span!("cinder.extend", pool = %pool.name(), image = %name, new_size).entered();
    let mut s = Saga::new(OP);
    let old = s.check("inspect", || {
        let size = Image::open_read_only(pool, &name)?.size()?;
        if new_size < size {
            return Err(Error::invalid(OP, format!("cannot shrink a volume ({size} -> {new_size} bytes)"))
                .with_target(pool.spec(&name, None)));
        }
        Ok(size)
    })?;
    if new_size > old {
        let name = &name;
        s.step(
            "resize",
            || Image::open(pool, name)?.resize(new_size, false),
            move || Image::open(pool, name)?.resize(old, true),
        )?;
    }
    let v = s.check("describe", || volume_info(pool, volume_id))?;
    s.commit()?;
    Ok(v)
}

/// Brings an existing image `existing_name` under Cinder's naming by renaming it to
/// `volume-<volume_id>` (Cinder's `manage_existing`). Wraps `rbd_rename`.
///
/// Failpoints: `cinder.manage_existing.{inspect,rename,describe,commit}` (a failure after the
/// rename renames it back).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] for bad names, [`ErrorKind::NotFound`] when the image is
/// missing, [`ErrorKind::Exists`] when `volume-<id>` exists (nothing changed).
pub fn manage_existing(pool: &Pool, existing_name: &str, volume_id: &str) -> Result<Volume> {
    const OP: &str = "cinder.manage_existing";
    Pool::validate_image_name(existing_name).map_err(|e| Error::invalid(OP, e.to_string()))?;
    validate_id(OP, "volume id", volume_id)?;
    let name = volume_name(volume_id);
    let _span =
        tracing::info_span!("cinder.manage_existing", pool = %pool.name(), image = existing_name, volume = %name)
            .entered();
    let mut s = Saga::new(OP);
    s.check("inspect", || {
        Image::open_read_only(pool, existing_name)?;
        if pool.image_exists(&name)? {
            return Err(Error::new(ErrorKind::Exists, OP, "the target volume name is taken")
                .with_target(pool.spec(&name, None)));
        }
        Ok(())
    })?;
    s.step("rename", || pool.rename_image(existing_name, &name), || pool.rename_image(&name, existing_name))?;
    let v = s.check("describe", || volume_info(pool, volume_id))?;
    s.commit()?;
    Ok(v)
}
