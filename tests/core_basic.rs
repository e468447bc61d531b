//! First live-cluster tests: connect, create, write, read back, remove; typed errors; caps.

mod common;

use rbd_core::{Cluster, ErrorKind, Image, ImageOptions, Pool};

#[test]
fn connect_and_fsid() {
    let c = live!();
    let fsid = c.fsid().expect("fsid");
    assert_eq!(fsid.len(), 36, "fsid looks like a uuid: {fsid}");
    assert!(c.pool_list().unwrap().contains(&"volumes".to_string()));
    let again = Cluster::shared(None, &common::client_id()).unwrap();
    assert!(again.same_connection(&c), "the shared cache returns the same connection");
    let st = c.stats().unwrap();
    assert!(st.total_bytes > 0 && st.avail_bytes <= st.total_bytes);
}

#[test]
fn create_write_read_remove() {
    let c = live!();
    let pool = Pool::open(&c, "rbd").unwrap();
    let name = common::unique("basic");
    pool.create_image(&name, 16 << 20, ImageOptions::new().order(22)).unwrap();
    {
        let img = Image::open(&pool, &name).unwrap();
        assert_eq!(img.size().unwrap(), 16 << 20);
        assert_eq!(img.stat().unwrap().order, 22);
        let data = common::pattern(7, 1 << 20);
        img.write(3 << 20, &data).unwrap();
        assert_eq!(img.read_vec(3 << 20, 1 << 20).unwrap(), data);
        assert_eq!(img.read_vec(0, 4096).unwrap(), vec![0u8; 4096], "unwritten reads as zeros");
        img.resize(32 << 20, false).unwrap();
        assert_eq!(img.size().unwrap(), 32 << 20);
        assert_eq!(img.resize(1 << 20, false).unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
    pool.remove_image(&name).unwrap();
    assert!(!pool.image_exists(&name).unwrap());
}

#[test]
fn typed_errors() {
    let c = live!();
    let pool = Pool::open(&c, "rbd").unwrap();
    let e = Image::open(&pool, "rbdcore-definitely-missing").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("rbd/rbdcore-definitely-missing"), "{e}");
    let img = common::ScratchImage::new(&c, "rbd", "exists", 1 << 20);
    let e = pool.create_image(&img.name, 1 << 20, &ImageOptions::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exists);
    let ro = Image::open_read_only(&pool, &img.name).unwrap();
    assert_eq!(ro.write(0, b"x").unwrap_err().kind(), ErrorKind::ReadOnly);
    assert_eq!(Pool::open(&c, "no-such-pool").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(pool.create_image("bad\0name", 1, &ImageOptions::new()).unwrap_err().kind(), ErrorKind::InvalidArgument);
}

#[test]
fn cinder_cannot_create_in_images() {
    let _ = live!();
    let cinder = common::cluster_as("cinder");
    let images = Pool::open(&cinder, "images").unwrap();
    let e = images.create_image(&common::unique("perm"), 1 << 20, &ImageOptions::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let volumes = Pool::open(&cinder, "volumes").unwrap();
    volumes.list_images().expect("cinder lists volumes");
}

#[test]
fn unreachable_monitor_times_out() {
    let _ = live!();
    let dir = std::env::temp_dir().join(common::unique("deadmon"));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("ceph.conf");
    std::fs::write(&conf, "[global]\nmon host = 127.0.0.1:1\nauth client required = none\n").unwrap();
    let t = std::time::Instant::now();
    let e = rbd_core::ClusterBuilder::new("admin")
        .conf_file(&conf)
        .timeout(std::time::Duration::from_secs(2))
        .connect()
        .unwrap_err();
    assert!(t.elapsed() < std::time::Duration::from_secs(10), "connect honoured the timeout: {:?}", t.elapsed());
    assert!(matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Other | ErrorKind::Io), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}
