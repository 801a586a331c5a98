//! Decoding: every supported oddity gives correct pixels, every bad file a clear error naming it.

use crate::common;
use deepfactor::images::{self, load_rgb};
use deepfactor::Error;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    common::repo_root().join("tests/fixtures/images").join(name)
}

fn assert_image_error(name: &str, needle: &str) {
    let path = fixture(name);
    let err = load_rgb(&path).expect_err(name);
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Image { .. } | Error::Io { .. }),
        "{name}: {err:?}"
    );
    assert!(
        msg.contains(name),
        "{name}: the error does not name the file: {msg}"
    );
    assert!(
        msg.to_lowercase().contains(needle),
        "{name}: expected {needle:?} in {msg}"
    );
}

#[test]
fn bad_files_give_errors_naming_them() {
    assert_image_error("text.jpg", "not an image");
    assert_image_error("empty.jpg", "not an image");
    assert_image_error("huge-header.png", "too large");
    let missing = fixture("no-such-file.jpg");
    let err = load_rgb(&missing).unwrap_err();
    assert!(err.to_string().contains("no-such-file.jpg"), "{err}");
}

#[test]
fn truncated_jpeg_is_an_error_or_a_full_size_image() {
    // Decoders differ on truncated JPEGs: some refuse, some fill the missing part. Either is
    // acceptable; a panic or a wrong size is not.
    match load_rgb(&fixture("truncated.jpg")) {
        Ok(img) => assert_eq!(img.dimensions(), (64, 64)),
        Err(e) => assert!(e.to_string().contains("truncated.jpg"), "{e}"),
    }
}

#[test]
fn cmyk_gray_and_16_bit_images_become_rgb() {
    for name in ["cmyk.jpg", "gray.jpg", "gray16.png"] {
        let img = load_rgb(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(img.dimensions(), (48, 32), "{name}");
    }
    // The CMYK file holds a red-to-blue gradient: the left edge is blue-ish, the right red-ish.
    let img = load_rgb(&fixture("cmyk.jpg")).unwrap();
    let left = img.get_pixel(1, 16);
    let right = img.get_pixel(46, 16);
    assert!(left[2] > 200 && left[0] < 60, "left {left:?}");
    assert!(right[0] > 200 && right[2] < 60, "right {right:?}");
    // 16-bit grey: a ramp; channels equal, increasing.
    let g = load_rgb(&fixture("gray16.png")).unwrap();
    let (a, b) = (g.get_pixel(0, 0), g.get_pixel(47, 31));
    assert_eq!(a[0], a[1]);
    assert!(b[0] > 250 && a[0] < 5);
}

#[test]
fn exif_orientation_is_applied() {
    let img = load_rgb(&fixture("exif-rotate90.jpg")).unwrap();
    // Stored 48×32; orientation 6 (rotate 90° clockwise) shows it 32×48.
    assert_eq!(img.dimensions(), (32, 48));
    // The stored top-left (dark red, blue high) moves to the top-right.
    let tr = img.get_pixel(31, 0);
    assert!(tr[2] > 200 && tr[0] < 60, "{tr:?}");
}

#[test]
fn truncated_jpeg_is_noticed_and_complete_files_are_not() {
    let warning = images::truncation(&fixture("truncated.jpg"))
        .unwrap()
        .expect("the truncated JPEG is noticed");
    assert!(warning.contains("truncated JPEG"), "{warning}");
    for name in ["cmyk.jpg", "gray.jpg", "exif-rotate90.jpg", "gray16.png"] {
        assert_eq!(images::truncation(&fixture(name)).unwrap(), None, "{name}");
    }
    let err = images::truncation(&fixture("no-such-file.jpg")).unwrap_err();
    assert!(err.to_string().contains("no-such-file.jpg"), "{err}");
}

#[test]
fn one_walker_finds_every_supported_format() {
    let dir = tempfile::tempdir().unwrap();
    let img = image::RgbImage::from_pixel(8, 6, image::Rgb([200, 30, 40]));
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let names = [
        "a.jpg",
        "b.JPEG",
        "c.png",
        "d.webp",
        "e.tif",
        "sub/f.tiff",
        "sub/g.bmp",
    ];
    for n in names {
        img.save(dir.path().join(n)).unwrap();
    }
    std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
    let found = images::image_files(dir.path());
    assert!(found.unreadable.is_empty());
    let want: Vec<PathBuf> = names.iter().map(|n| dir.path().join(n)).collect();
    assert_eq!(found.files, want);
    // Every one of them decodes to the same pixels' size.
    for p in &found.files {
        assert_eq!(load_rgb(p).unwrap().dimensions(), (8, 6), "{}", p.display());
    }
    let missing = images::image_files(&dir.path().join("nowhere"));
    assert_eq!(missing.unreadable.len(), 1);
}
