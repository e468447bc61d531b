//! `rbdlc info POOL/IMAGE[@SNAP]`.

use rbd_core::{Cluster, Image, Pool, Result};
use serde_json::json;

use crate::output::{bytes, Out};
use crate::spec::Spec;

pub fn run(cluster: &Cluster, spec: &Spec, out: &Out) -> Result<()> {
    let pool = Pool::open_ns(cluster, &spec.pool, &spec.namespace)?;
    let img = match &spec.snap {
        Some(s) => Image::open_at_snap(&pool, &spec.image, s)?,
        None => Image::open_read_only(&pool, &spec.image)?,
    };
    let st = img.stat()?;
    let features = img.features()?;
    let parent = img.parent()?.map(|p| format!("{}/{}@{}", p.pool, p.image, p.snap));
    let snaps: Vec<_> = img
        .snapshots()?
        .into_iter()
        .map(|s| json!({"id": s.id, "name": s.name, "size": s.size, "namespace": format!("{:?}", s.namespace), "protected": s.protected}))
        .collect();
    let watchers: Vec<_> = img.watchers()?.into_iter().map(|w| w.addr).collect();
    let v = json!({
        "image": spec.to_string(), "id": img.id()?, "size": st.size, "order": st.order, "object_size": st.obj_size,
        "objects": st.num_objs, "block_name_prefix": st.block_name_prefix, "features": features.names(),
        "stripe_unit": img.stripe_unit()?, "stripe_count": img.stripe_count()?,
        "parent": parent, "overlap": img.overlap()?, "snapshots": snaps, "watchers": watchers,
    });
    out.result(v, |v| {
        let mut s = format!(
            "rbd image '{}':\n\tsize {} in {} objects\n\torder {} ({} objects)\n\tid: {}\n\tblock_name_prefix: {}\n\tfeatures: {}",
            spec, bytes(st.size), st.num_objs, st.order, bytes(st.obj_size), v["id"].as_str().unwrap_or(""),
            st.block_name_prefix, features.names().join(", ")
        );
        if let Some(p) = v["parent"].as_str() {
            s.push_str(&format!("\n\tparent: {p}\n\toverlap: {}", bytes(v["overlap"].as_u64().unwrap_or(0))));
        }
        if let Some(snaps) = v["snapshots"].as_array() {
            for sn in snaps {
                s.push_str(&format!("\n\tsnapshot {} {} ({})", sn["id"], sn["name"].as_str().unwrap_or(""), sn["namespace"].as_str().unwrap_or("")));
            }
        }
        s
    });
    Ok(())
}
