//! Shared by the CLI's integration tests: the settings of the loopback lab
//! that `scripts/lab-up.sh` writes. Tests fail (never skip) without it.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The lab's `export NAME='value'` settings.
pub fn lab() -> &'static HashMap<String, String> {
    static LAB: OnceLock<HashMap<String, String>> = OnceLock::new();
    LAB.get_or_init(|| {
        let path = std::env::var("RSISCSI_LAB_ENV").unwrap_or_else(|_| "/tmp/rsiscsi-lab/lab.env".into());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("the target lab is not running ({path}: {e}): run scripts/test.sh, or start scripts/lab-up.sh first")
        });
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect()
    })
}

/// One lab setting, e.g. `var("RSISCSI_TGT_IQN_SVC")`.
pub fn var(name: &str) -> String {
    lab().get(name).unwrap_or_else(|| panic!("{name} missing from the lab settings")).clone()
}
