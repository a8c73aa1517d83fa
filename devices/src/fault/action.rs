//! What block and net rules' actions have in common once a rule fires: the delay action and
//! the action's name in the fault log. One place, so both logs spell them alike.

use std::time::Duration;

use serde::Serialize;

/// A delay action: how long the request or frame is held back, and the log's detail.
/// Validation makes delay rules carry `delay_ms`; 0 stands in for a missing one.
pub(crate) fn delay(delay_ms: Option<u64>) -> (Duration, String) {
    let ms = delay_ms.unwrap_or(0);
    (Duration::from_millis(ms), format!("delay_ms={ms}"))
}

/// The action as the rules file spells it (`eio`, `drop`), for the log's `action` field.
pub(crate) fn action_name(action: impl Serialize) -> String {
    serde_json::to_value(action)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::rules::{BlockActionKind, NetActionKind};

    // vmm/FAULTS.md and the orchestrator's fault summary read these spellings from the log.
    #[test]
    fn log_spellings_are_the_rules_file_words() {
        assert_eq!(
            delay(Some(200)),
            (Duration::from_millis(200), "delay_ms=200".to_string())
        );
        assert_eq!(action_name(BlockActionKind::Eio), "eio");
        assert_eq!(action_name(NetActionKind::Duplicate), "duplicate");
    }
}
