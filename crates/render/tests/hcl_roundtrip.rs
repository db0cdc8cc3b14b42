//! Property: whatever string or JSON data a user writes, the HCL1 the writer renders reads back
//! (with HCL1's own lexing and unquoting rules, `common/hcl1.rs`) as exactly that value, and
//! never contains a raw `$` (the start of an interpolation) or `@` (the pod-name placeholder).
//! `config_injection.rs` runs a sample of the same strategies through real `bao`.

mod common;

use common::hcl1::{hostile_string, json_value, read_string, read_value};
use openbao_render::hcl;
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // No files under tests/: a failure prints its minimal input instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn any_string_reads_back_unchanged(s in hostile_string(64)) {
        let quoted = hcl::quote(&s);
        prop_assert!(!quoted.contains('$') && !quoted.contains('@'), "{quoted}");
        prop_assert!(!quoted.chars().any(|c| c.is_control()), "{quoted:?}");
        prop_assert_eq!(read_string(&quoted), Ok(s));
    }

    #[test]
    fn any_unicode_string_reads_back_unchanged(s in any::<String>()) {
        prop_assert_eq!(read_string(&hcl::quote(&s)), Ok(s));
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn any_json_data_reads_back_unchanged(v in json_value(), indent in 0usize..3) {
        let rendered = hcl::value(&v, indent);
        prop_assert!(!rendered.contains('$') && !rendered.contains('@'), "{rendered}");
        prop_assert_eq!(read_value(&rendered), Ok(v));
    }
}

/// The reader is strict where HCL1 is: it would catch the writer emitting what HCL1 misreads.
#[test]
fn the_reader_rejects_what_hcl1_misreads() {
    for bad in [
        r#""${a}""#,
        "\"a\nb\"",
        "\"a\0b\"",
        "\"\u{E123}\"",
        r#""unterminated"#,
        r#""\q""#,
        "null",
    ] {
        assert!(read_value(bad).is_err(), "{bad:?} was accepted");
    }
    assert_eq!(read_string(r#""\u0024{a} %{b} \U0001F600""#), Ok("${a} %{b} 😀".into()));
}
