//! Unit tests of the detector table and the control-flow question.

use super::DETECTORS;
use crate::codes::CATALOGUE;

#[test]
fn every_rule_has_exactly_one_detector() {
    for rule in CATALOGUE {
        let count = DETECTORS
            .iter()
            .filter(|(detector_rule, _)| detector_rule.id == rule.id)
            .count();
        assert_eq!(count, 1, "{} has {count} detectors", rule.id);
    }
    assert_eq!(DETECTORS.len(), CATALOGUE.len());
}
