//! The other YAML files Cordon loads: an integration manifest (first byte even) or the config
//! (first byte odd).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if pick % 2 == 0 {
        let _ = cordon::fuzzing::manifest(text);
    } else {
        let _ = cordon::fuzzing::config(text);
    }
});
