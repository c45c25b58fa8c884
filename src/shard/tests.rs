//! The shard assignment and the `I/N` syntax.

use super::{ShardSpec, shard_of};

#[test]
fn assignment_is_the_sha256_of_the_path_mod_n() {
    // Expected values from Python's hashlib (`int(sha256(name).hexdigest()[:16], 16) % n + 1`),
    // not from this code.
    for (name, count, expected) in EXPECTED {
        assert_eq!(shard_of(name, *count), *expected, "{name} of {count}");
    }
}

#[test]
fn shard_spec_parses_i_of_n_and_refuses_the_rest() {
    assert_eq!(
        "2/4".parse::<ShardSpec>(),
        Ok(ShardSpec { index: 2, count: 4 })
    );
    assert_eq!(
        "1/1".parse::<ShardSpec>(),
        Ok(ShardSpec { index: 1, count: 1 })
    );
    for bad in ["0/4", "5/4", "1/0", "2", "a/b", "2/4/8", "-1/4", ""] {
        assert!(bad.parse::<ShardSpec>().is_err(), "{bad:?} was accepted");
    }
}

const EXPECTED: &[(&str, u32, u32)] = &[
    ("bounds_check/app", 1, 1),
    ("bounds_check/app", 2, 2),
    ("bounds_check/app", 3, 2),
    ("bounds_check/app", 7, 7),
    ("bounds_check/app.exe", 1, 1),
    ("bounds_check/app.exe", 2, 2),
    ("bounds_check/app.exe", 3, 2),
    ("bounds_check/app.exe", 7, 7),
    ("tls/app", 1, 1),
    ("tls/app", 2, 1),
    ("tls/app", 3, 1),
    ("tls/app", 7, 7),
    ("bin/tool-0001", 1, 1),
    ("bin/tool-0001", 2, 1),
    ("bin/tool-0001", 3, 2),
    ("bin/tool-0001", 7, 1),
    ("x", 1, 1),
    ("x", 2, 1),
    ("x", 3, 1),
    ("x", 7, 2),
];
