//! The fuzz targets' annotation list is the runtime's: every key the
//! runtime or the shim spells is a `cnfbox-annotations` key, and every
//! such key has a check in `cnfbox::fuzzing` that reads its value.

use std::path::{Path, PathBuf};

use cnfbox::fuzzing::{Coverage, CHECKS, COVERAGE};
use cnfbox_annotations::{looks_like_a_key, ALL};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read source dir").flatten() {
        let path = e.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// Quoted words in `text` spelt like an annotation key: string literals,
/// JSON inside raw strings (`{"io.kubernetes.cri.sandbox-id":"p"}`),
/// escaped ones (`\"cnfbox.io/x\"`).
fn key_literals(text: &str) -> Vec<&str> {
    text.split('"')
        .map(|s| s.trim_end_matches('\\'))
        .filter(|s| looks_like_a_key(s) && !s.contains(char::is_whitespace))
        .collect()
}

#[test]
fn every_key_the_sources_spell_is_a_shared_one() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "../shim/src"] {
        rust_files(&manifest.join(dir), &mut files);
    }
    assert!(files.len() > 20, "sources not found: {files:?}");
    let mut missing = Vec::new();
    let mut seen = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read source");
        for key in key_literals(&text) {
            if !ALL.contains(&key) {
                missing.push(format!("{}: {key}", f.display()));
            }
            seen.push(key.to_string());
        }
    }
    // The shim's tests spell the sandbox key inside JSON: the scan sees it.
    assert!(
        seen.iter().any(|k| k == cnfbox_annotations::CRI_SANDBOX_ID),
        "{seen:?}"
    );
    assert!(
        missing.is_empty(),
        "annotation keys spelt outside cnfbox-annotations (add them there, and a fuzz check): {missing:?}"
    );
}

#[test]
fn every_shared_key_has_a_fuzz_check() {
    for key in ALL {
        let Some((_, how)) = COVERAGE.iter().find(|(k, _)| k == key) else {
            panic!("annotation {key} is not fuzzed: add it to cnfbox::fuzzing::COVERAGE");
        };
        if let Coverage::Check(name) = how {
            assert!(
                CHECKS.iter().any(|(n, _)| n == name),
                "{key}: no check named {name:?} in cnfbox::fuzzing::CHECKS"
            );
        }
    }
    for (key, _) in COVERAGE {
        assert!(ALL.contains(key), "{key} is not a cnfbox-annotations key");
    }
}

#[test]
fn the_scan_finds_keys_in_literals_only() {
    let text = r#"let k = "cnfbox.io/new-thing"; // `cnfbox.io/doc` "io.kubernetes.pod.name"
        r"{"io.kubernetes.cri-o.New":"p"}" "{\"cnfbox.io/esc\":1}" "in cnfbox.io/msg""#;
    assert_eq!(
        key_literals(text),
        [
            "cnfbox.io/new-thing",
            "io.kubernetes.cri-o.New",
            "cnfbox.io/esc"
        ]
    );
}
