use super::*;

fn sample() -> State {
    let mut s = State::default();
    for (i, pod) in ["a", "b \"quoted\" with spaces", "c"].iter().enumerate() {
        let host = 100_000 + u32::try_from(i).expect("small") * 65_536;
        s.insert(PodEntry {
            root: (i != 1).then(|| PathBuf::from(format!("/run/containerd/cnfbox/ns {i}%"))),
            pod: (*pod).into(),
            origin: Origin::Allocated,
            created: 1_700_000_000,
            mapping: PodMapping::symmetric(Mapping::new(0, host, 65_536).expect("m")),
        })
        .expect("insert");
    }
    s.generation = 7;
    s
}

#[test]
fn round_trip() {
    let s = sample();
    let bytes = encode(&s);
    let back = decode(Path::new("/l"), &bytes).expect("decode");
    assert_eq!(back.generation, 7);
    assert_eq!(
        back.entries().cloned().collect::<Vec<_>>(),
        s.entries().cloned().collect::<Vec<_>>()
    );
}

#[test]
fn every_flipped_bit_and_truncation_is_detected() {
    let bytes = encode(&sample());
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            let r = decode(Path::new("/var/lib/cnfbox/idmap/ledger"), &b);
            assert!(
                matches!(r, Err(LedgerError::Corrupt { .. })),
                "flip of bit {bit} at byte {i} not detected"
            );
        }
    }
    for len in 0..bytes.len() {
        let r = decode(Path::new("/l"), &bytes[..len]);
        assert!(
            matches!(r, Err(LedgerError::Corrupt { .. })),
            "truncation to {len} not detected"
        );
    }
    let mut extra = bytes.clone();
    extra.extend_from_slice(b"x\n");
    assert!(decode(Path::new("/l"), &extra).is_err());
}

#[test]
fn overlapping_entries_with_valid_checksum_are_corrupt() {
    let mut body = format!("{MAGIC_V1}\ngeneration 1\nentries 2\n");
    body.push_str("allocated 0 0:100000:65536 0:100000:65536 a\n");
    body.push_str("allocated 0 0:100000:65536 0:200000:65536 b\n");
    let sum = hex(&Sha256::digest(body.as_bytes()));
    body.push_str(&format!("{TRAILER}{sum}\n"));
    let err = decode(Path::new("/x/ledger"), body.as_bytes()).expect_err("overlap");
    let msg = err.to_string();
    assert!(msg.contains("/x/ledger is corrupt at line 5"), "{msg}");
    assert!(msg.contains("cnfbox ranges repair"), "{msg}");
}

fn checksummed(body: &str) -> Vec<u8> {
    let sum = hex(&Sha256::digest(body.as_bytes()));
    format!("{body}{TRAILER}{sum}\n").into_bytes()
}

#[test]
fn v1_ledgers_are_read_with_no_root_and_rewritten_as_v2() {
    let body = format!(
        "{MAGIC_V1}\ngeneration 4\nentries 1\nallocated 9 0:100000:65536 0:100000:65536 old pod\n"
    );
    let s = decode(Path::new("/l"), &checksummed(&body)).expect("v1 decodes");
    let e = s.get(None, "old pod").expect("entry");
    assert_eq!(e.root, None);
    assert_eq!(e.mapping.uid.host_id(), 100_000);
    let v2 = encode(&s);
    assert!(v2.starts_with(MAGIC.as_bytes()));
    let text = String::from_utf8(v2.clone()).expect("utf-8");
    assert!(text.contains(" - old pod\n"), "{text}");
    let back = decode(Path::new("/l"), &v2).expect("v2 decodes");
    assert_eq!(back.get(None, "old pod"), Some(e));
}

#[test]
fn the_same_pod_in_two_roots_is_two_entries() {
    use std::os::unix::ffi::OsStrExt;
    let mut s = State::default();
    let odd = std::ffi::OsStr::from_bytes(b"/tmp/r o%ot\xff\n-x");
    for (i, root) in [Path::new("/run/cnfbox"), Path::new(odd)]
        .iter()
        .enumerate()
    {
        let host = 100_000 + u32::try_from(i).expect("small") * 65_536;
        s.insert(PodEntry {
            root: Some(root.to_path_buf()),
            pod: "x".into(),
            origin: Origin::Allocated,
            created: 1,
            mapping: PodMapping::symmetric(Mapping::new(0, host, 65_536).expect("m")),
        })
        .expect("a second root may hold the same id");
    }
    let bytes = encode(&s);
    let text = String::from_utf8(bytes.clone()).expect("ascii");
    assert!(text.contains(" /tmp/r%20o%25ot%ff%0a-x x\n"), "{text}");
    let back = decode(Path::new("/l"), &bytes).expect("decode");
    assert_eq!(
        back.get(Some(Path::new(odd)), "x")
            .map(|e| e.mapping.uid.host_id()),
        Some(165_536)
    );
    assert_eq!(back.roots().len(), 2);
    for bad in ["relative", "/a%2", "/a%2F", "/a%2f", "/a%41", "/a\u{e9}"] {
        assert!(decode_root(bad).is_err(), "{bad:?} accepted");
    }
}
