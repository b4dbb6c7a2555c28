//! The playbook loader (`cordon check`): YAML, the position index, every check, Rhai compilation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Files are read as UTF-8 text; anything else is refused before the loader.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = cordon::fuzzing::playbook(text);
    }
});
