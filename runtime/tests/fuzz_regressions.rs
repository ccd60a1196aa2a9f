//! Replays every input the fuzz targets ever crashed on
//! (`fuzz/regressions/<target>/`), and the seeds, through the same entry
//! points, so that a fixed crash stays fixed in the normal test run.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["regressions", "seeds"] {
        let Ok(entries) = std::fs::read_dir(base.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).expect("read fuzz input");
            eprintln!("replay {}", e.path().display());
            f(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn config_json_inputs() {
    assert!(
        replay("config_json", cnfbox::check_untrusted_spec) > 0,
        "no seeds found"
    );
}

#[test]
fn annotation_inputs() {
    assert!(
        replay("annotations", cnfbox::check_untrusted_annotations) > 0,
        "no seeds found"
    );
}
