//! deploy/images/build is reproducible, and its images carry the configuration tests rely on.

use std::path::Path;
use std::process::Command;

use atoll_testkit::runtime::images_dir;
use serde_json::Value;

fn build(out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/images/build");
    let run = Command::new(script)
        .arg(out)
        .output()
        .expect("run deploy/images/build");
    assert!(
        run.status.success(),
        "deploy/images/build {out:?} failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).expect("read a layout file");
    serde_json::from_slice(&bytes).expect("layout files are JSON")
}

/// The blob a descriptor points at, parsed.
fn blob(layout: &Path, descriptor: &Value) -> Value {
    let digest = descriptor["digest"].as_str().expect("a digest");
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    read_json(&layout.join("blobs/sha256").join(hex))
}

/// The image config of the only manifest in `layout`, and that manifest's tag.
fn config(layout: &Path) -> (String, Value) {
    let index = read_json(&layout.join("index.json"));
    let manifest = &index["manifests"][0];
    let tag = manifest["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .expect("a tag")
        .to_string();
    (tag, blob(layout, &blob(layout, manifest)["config"]))
}

#[test]
fn building_twice_gives_the_same_digests() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    build(&a);
    build(&b);
    let cached = images_dir();
    for name in ["busybox", "pause"] {
        let index = std::fs::read(a.join(name).join("index.json")).unwrap();
        assert_eq!(
            index,
            std::fs::read(b.join(name).join("index.json")).unwrap()
        );
        assert_eq!(
            index,
            std::fs::read(cached.join(name).join("index.json")).unwrap()
        );
    }
}

#[test]
fn images_have_the_expected_configuration() {
    let dir = images_dir();
    let (tag, busybox) = config(&dir.join("busybox"));
    assert_eq!(tag, "1.35");
    assert_eq!(busybox["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(busybox["config"]["Env"], serde_json::json!(["PATH=/bin"]));
    assert_eq!(busybox["created"], "2024-01-01T00:00:00Z");
    let (tag, pause) = config(&dir.join("pause"));
    assert_eq!(tag, "3.9");
    assert_eq!(
        pause["config"]["Entrypoint"],
        serde_json::json!(["/pause", "-P"])
    );
    assert_eq!(pause["config"]["User"], "65535:65535");
}
