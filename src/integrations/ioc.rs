//! Local indicator feeds (CSV, STIX 2.1), matched in memory. (Interface stub; the implementation
//! lands from the intel branch.)

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IocMatch {
    pub indicator: String,
    pub kind: String,
    pub feed: String,
    pub description: Option<String>,
    pub labels: Vec<String>,
    pub confidence: Option<u8>,
    pub id: Option<String>,
}

#[derive(Debug, Default)]
pub struct IocIndex;

impl IocIndex {
    pub fn load(_paths: &[std::path::PathBuf]) -> Result<IocIndex, String> {
        Ok(IocIndex)
    }

    pub fn lookup(&self, _value: &str) -> Vec<IocMatch> {
        Vec::new()
    }
}
