//! Every intake normalizer: the first byte picks the source (its index in `SourceKind::ALL`), the
//! rest is the request body.
#![no_main]

use cordon::intake::formats::SourceKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let source = SourceKind::ALL[usize::from(pick) % SourceKind::ALL.len()];
    let _ = cordon::fuzzing::intake(source, body);
});
