use serde_json::value::RawValue;

use super::FormatError;
use crate::alert::Alert;

pub(super) fn normalize(_raw: &RawValue) -> Result<Vec<Alert>, FormatError> {
    Err(FormatError::new("this source's normalizer is being written"))
}
