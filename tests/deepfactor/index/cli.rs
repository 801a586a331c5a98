//! `deepfactor index info|verify|rm|compact` on a copy of the golden index.

use std::path::Path;
use std::process::Command;

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_deepfactor"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn copy_golden(to: &Path) {
    let from = super::super::common::repo_root().join("index-format/golden/v1");
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn index_subcommands() {
    let tmp = super::tempdir();
    let dir = tmp.path().join("ix");
    copy_golden(&dir);
    let d = dir.to_str().unwrap();

    let (ok, out, _) = cli(&["index", "info", d]);
    assert!(ok);
    assert!(
        out.contains("44 live (46 stored, 2 deleted) in 2 segments"),
        "{out}"
    );
    let (ok, out, _) = cli(&["index", "info", "--json", d]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["live"], 44);
    assert_eq!(v["segments"].as_array().unwrap().len(), 2);

    let (ok, out, _) = cli(&["index", "verify", d]);
    assert!(ok && out.starts_with("ok: generation 3"), "{out}");

    let path = "/photos/005/img-5.jpg";
    let (ok, out, _) = cli(&["index", "rm", d, "--id", "0", "--path", path]);
    assert!(ok && out.contains("deleted 2 images"), "{out}");
    let (ok, _, err) = cli(&["index", "rm", d, "--id", "0"]);
    assert!(!ok && err.contains("none of the given images"), "{err}");

    let (ok, out, _) = cli(&["index", "compact", "--json", d]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["segments"].as_u64(), v["live"].as_u64()),
        (Some(1), Some(42))
    );

    // Damage the segment: verify fails, naming the file and the section.
    let seg = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "dfs"))
        .unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    let n = b.len();
    b[n / 2] ^= 0x40;
    std::fs::write(&seg, b).unwrap();
    let (ok, _, err) = cli(&["index", "verify", d]);
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(
        !ok && err.contains(name) && err.contains("section"),
        "{err}"
    );

    let (ok, _, err) = cli(&["index", "info", tmp.path().to_str().unwrap()]);
    assert!(!ok && err.contains("not a deepfactor index"), "{err}");
}
